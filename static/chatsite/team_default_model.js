// The admin's team settings: a team's default model is one its default key offers. When the
// admin chooses another key, the model list becomes that key's, without a reload: the select
// carries every key's models (data-models, with each empty choice's words, translated by the
// server) and the name of its key field (data-key-field). The server checks the choice again.
(function () {
  "use strict";

  function listModels(keySelect) {
    var selector = 'select[data-key-field="' + CSS.escape(keySelect.name) + '"]';
    document.querySelectorAll(selector).forEach(function (select) {
      var byKey = JSON.parse(select.getAttribute("data-models") || "{}");
      var offer = byKey[keySelect.value] ||
        {blank: select.getAttribute("data-no-key") || "", models: []};
      var chosen = select.value;
      var options = [new Option(offer.blank, "")];
      offer.models.forEach(function (model) { options.push(new Option(model, model)); });
      select.replaceChildren.apply(select, options);
      select.value = offer.models.indexOf(chosen) >= 0 ? chosen : "";
    });
  }

  function changed(event) {
    var target = event.target;
    if (target && target.tagName === "SELECT" && target.name &&
        document.querySelector('select[data-key-field="' + CSS.escape(target.name) + '"]')) {
      listModels(target);
    }
  }

  // The key is an autocomplete field: Select2 announces a choice through jQuery only, and a
  // jQuery handler also hears the browser's own change events.
  if (window.django && window.django.jQuery) {
    window.django.jQuery(document).on("change", "select", changed);
  } else {
    document.addEventListener("change", changed);
  }
})();
