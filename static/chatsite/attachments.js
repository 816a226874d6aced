// Attaching files to a message: the composer's "Attach" input (works without this script), plus
// drag and drop and paste, which put the files into that same input; small previews with a
// Remove button; and a warning, before anything is sent, when the chosen model takes no images.
(function () {
  "use strict";

  var gettext = window.gettext || function (text) { return text; };
  var interpolate = window.interpolate || function (format, values, named) {
    return named
      ? format.replace(/%\(\w+\)s/g, function (match) { return String(values[match.slice(2, -2)]); })
      : format.replace(/%s/g, function () { return String(values.shift()); });
  };

  function composer() { return document.getElementById("composer"); }
  function input() {
    var form = composer();
    return form && form.querySelector("input[type=file][name=attachments]");
  }

  function isImage(file) { return /^image\//.test(file.type || ""); }

  function setFiles(files) {
    var field = input();
    if (!field || typeof DataTransfer === "undefined") return;
    var transfer = new DataTransfer();
    files.forEach(function (file) { transfer.items.add(file); });
    field.files = transfer.files;
    render();
  }

  function addFiles(list) {
    var field = input();
    if (!field || !list || !list.length) return;
    setFiles(Array.prototype.slice.call(field.files).concat(Array.prototype.slice.call(list)));
  }

  function render() {
    var form = composer();
    var field = input();
    if (!form || !field) return;
    var chips = form.querySelector(".composer__chips");
    if (chips) {
      chips.textContent = "";
      Array.prototype.forEach.call(field.files, function (file, index) {
        var chip = document.createElement("li");
        chip.className = "composer__chip";
        if (isImage(file)) {
          var preview = document.createElement("img");
          preview.alt = "";
          preview.className = "composer__preview";
          var reader = new FileReader();
          // A data: URL: the page's Content-Security-Policy allows those for images, not blob:.
          reader.onload = function () { preview.src = reader.result; };
          reader.readAsDataURL(file);
          chip.appendChild(preview);
        }
        var name = document.createElement("bdi");
        name.textContent = file.name;
        chip.appendChild(name);
        var remove = document.createElement("button");
        remove.type = "button";
        remove.className = "link composer__remove";
        remove.textContent = gettext("Remove");
        remove.setAttribute("aria-label", interpolate(gettext("Remove %(name)s"), {name: file.name}, true));
        remove.addEventListener("click", function () {
          var files = Array.prototype.slice.call(field.files);
          files.splice(index, 1);
          setFiles(files);
          field.focus();
        });
        chip.appendChild(remove);
        chips.appendChild(chip);
      });
    }
    // The image detail matters once an image is attached: until then it takes no room (without
    // JavaScript it is always shown).
    var detail = form.querySelector(".composer__detail");
    if (detail) detail.hidden = !Array.prototype.some.call(field.files, isImage);
    checkVision();
  }

  // Whether the chosen model takes images (its option says so, from the catalog).
  function visionBlocked() {
    var form = composer();
    var field = input();
    if (!form || !field || !form.elements.model) return false;
    var select = form.elements.model;
    var option = select.options && select.options[select.selectedIndex];
    var images = Array.prototype.some.call(field.files, isImage);
    return images && !!option && !option.hasAttribute("data-vision");
  }

  function checkVision() {
    var form = composer();
    var warning = form && form.querySelector(".composer__no-vision");
    if (warning) warning.hidden = !visionBlocked();
    return !visionBlocked();
  }

  document.addEventListener("change", function (event) {
    var form = composer();
    if (!form || !event.target || event.target.form !== form) return;
    if (event.target.name === "attachments") render();
    if (event.target.name === "model") checkVision();
  });

  // Refuse before sending: nothing goes to the server, what was typed and attached stays.
  document.addEventListener("submit", function (event) {
    var form = composer();
    if (event.target !== form || event.submitter && event.submitter.hasAttribute("formaction")) return;
    if (!checkVision()) {
      event.preventDefault();
      event.stopPropagation();
      var warning = form.querySelector(".composer__no-vision");
      if (warning) {
        warning.setAttribute("tabindex", "-1");
        warning.focus();
      }
    }
  }, true);

  // Drag and drop onto the composer.
  function carriesFiles(event) {
    var types = event.dataTransfer && event.dataTransfer.types;
    return !!types && Array.prototype.indexOf.call(types, "Files") >= 0;
  }
  document.addEventListener("dragover", function (event) {
    var form = composer();
    if (!form || !carriesFiles(event) || !form.contains(event.target)) return;
    event.preventDefault();
    form.classList.add("composer--dropping");
  });
  document.addEventListener("dragleave", function (event) {
    var form = composer();
    if (form && event.target === form) form.classList.remove("composer--dropping");
  });
  document.addEventListener("drop", function (event) {
    var form = composer();
    if (!form || !form.contains(event.target) || !event.dataTransfer) return;
    if (!event.dataTransfer.files || !event.dataTransfer.files.length) return;
    event.preventDefault();
    form.classList.remove("composer--dropping");
    addFiles(event.dataTransfer.files);
  });

  // Paste: files on the clipboard (a screenshot) are attached; text is pasted as usual.
  document.addEventListener("paste", function (event) {
    var form = composer();
    if (!form || !form.contains(event.target) || !event.clipboardData) return;
    var files = event.clipboardData.files;
    if (!files || !files.length) return;
    event.preventDefault();
    addFiles(files);
  });

  // Sent: the attachments went with the message.
  document.body.addEventListener("chat:sent", function () {
    var field = input();
    if (field) {
      field.value = "";
      render();
    }
  });

  document.addEventListener("DOMContentLoaded", render);
})();
