// chatsite's own behaviour on top of htmx: keyboard sending, composer reset, stream resume.
// No inline scripts anywhere: the Content-Security-Policy allows scripts from this site only.
(function () {
  "use strict";

  // Strings are translated through Django's JavaScript catalogue (/jsi18n/, loaded first); if it
  // failed to load, the page still works, in English.
  var gettext = window.gettext || function (text) { return text; };
  var interpolate = window.interpolate || function (format, values) {
    return format.replace(/%\((\w+)\)s/g, function (all, name) { return String(values[name]); });
  };

  function composer() {
    return document.getElementById("composer");
  }

  // Enter sends; Shift+Enter adds a line. An Enter that belongs to an input method (Korean,
  // Chinese, Japanese: it commits the syllable or the candidate being composed) never sends:
  // browsers mark it isComposing, or keyCode 229 (Safari, after compositionend), and between
  // compositionstart and compositionend nothing is final.
  var composing = false;
  document.addEventListener("compositionstart", function () { composing = true; });
  document.addEventListener("compositionend", function () { composing = false; });
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (event.key !== "Enter" || event.shiftKey) return;
    if (composing || event.isComposing || event.keyCode === 229) return;
    if (!target || target.name !== "content" || !target.form || target.form.id !== "composer") return;
    event.preventDefault();
    var files = target.form.elements.attachments;
    if (target.value.trim() !== "" || (files && files.files && files.files.length)) {
      target.form.requestSubmit();
    }
  });

  // The server says the message was stored: clear the box and scroll to the reply.
  document.body.addEventListener("chat:sent", function () {
    var form = composer();
    if (form) {
      form.elements.content.value = "";
      form.elements.content.focus();
    }
    var errors = document.getElementById("form-errors");
    if (errors) errors.innerHTML = "";
    var empty = document.getElementById("empty-state");
    if (empty) empty.remove();
    following = true;
    var jump = jumpButton();
    if (jump) jump.hidden = true;
    scrollToEnd();
    updateComposer();
  });

  // A failed request (network down, server error) keeps what was typed and says so.
  document.body.addEventListener("htmx:responseError", function (event) {
    showError(event.detail.xhr.status >= 500
      ? gettext("The server had a problem. Your message is still in the box; try again.")
      : interpolate(gettext("The request was refused (%(status)s). Reload the page and try again."),
                    {status: event.detail.xhr.status}, true));
  });
  document.body.addEventListener("htmx:sendError", function () {
    showError(gettext("The server cannot be reached. Your message is still in the box; try again."));
  });

  function showError(text) {
    var errors = document.getElementById("form-errors");
    if (!errors) return;
    errors.textContent = text;
  }

  // Keep the stream URL's offset current, so a stream htmx has to reopen resumes where the
  // page is instead of repeating text. (A reconnect of the EventSource itself sends Last-Event-ID.)
  document.body.addEventListener("htmx:sseMessage", function (event) {
    var source = event.target.closest("[sse-connect]");
    var id = event.detail && event.detail.lastEventId;
    if (source && id) {
      var url = source.getAttribute("sse-connect").replace(/([?&])offset=\d+/, "$1offset=" + id);
      source.setAttribute("sse-connect", url);
    }
  });

  // Before the first text: how long the model has been working, in the page's language.
  function showWaiting() {
    var lang = document.documentElement.lang || undefined;
    var seconds = new Intl.NumberFormat(lang, {style: "unit", unit: "second", unitDisplay: "narrow"});
    document.querySelectorAll("[data-waiting-since]").forEach(function (notice) {
      var body = notice.parentNode && notice.parentNode.querySelector(".message__body--streaming");
      if (body && body.textContent.trim() !== "") {
        notice.remove();
        return;
      }
      var since = Date.parse(notice.getAttribute("data-waiting-since"));
      var elapsed = notice.querySelector(".message__elapsed");
      if (elapsed && !isNaN(since)) {
        elapsed.textContent = seconds.format(Math.max(0, Math.round((Date.now() - since) / 1000)));
      }
    });
  }
  setInterval(showWaiting, 1000);
  document.body.addEventListener("htmx:sseMessage", showWaiting);

  function nearEnd() {
    var list = document.getElementById("messages");
    return list && list.scrollHeight - list.scrollTop - list.clientHeight < 120;
  }

  function scrollToEnd() {
    var list = document.getElementById("messages");
    if (list) list.scrollTop = list.scrollHeight;
  }

  // A "Copy" button on every code block of a rendered reply.
  function addCopyButtons(root) {
    root.querySelectorAll(".markdown pre").forEach(function (pre) {
      if (pre.querySelector("button.copy")) return;
      var button = document.createElement("button");
      button.type = "button";
      button.className = "copy";
      button.textContent = gettext("Copy");
      button.setAttribute("aria-label", gettext("Copy code"));
      button.addEventListener("click", function () {
        var code = pre.querySelector("code") || pre;
        navigator.clipboard.writeText(code.innerText).then(function () {
          button.textContent = gettext("Copied");
          setTimeout(function () { button.textContent = gettext("Copy"); }, 1500);
        });
      });
      pre.appendChild(button);
    });
  }
  document.body.addEventListener("htmx:afterSettle", function (event) {
    addCopyButtons(event.target.parentNode || document);
  });

  // "Copy" on every finished message: its text as the member reads it.
  function enableMessageCopy(root) {
    root.querySelectorAll("button[data-copy]").forEach(function (button) {
      if (!navigator.clipboard || button.dataset.ready) return;
      button.dataset.ready = "1";
      button.hidden = false;
      var label = button.textContent;
      button.addEventListener("click", function () {
        var body = document.querySelector(button.getAttribute("data-copy"));
        if (!body) return;
        navigator.clipboard.writeText(body.innerText).then(function () {
          button.textContent = button.getAttribute("data-copied");
          setTimeout(function () { button.textContent = label; }, 1500);
        });
      });
    });
  }
  document.body.addEventListener("htmx:afterSettle", function (event) {
    enableMessageCopy(event.target.parentNode || document);
    updateComposer();
  });

  // While a reply is being written, the composer offers Stop instead of Send (the server
  // refuses a second message meanwhile too); Esc stops it as well.
  function streamingStop() {
    var streaming = document.querySelectorAll(".message__body--streaming");
    if (!streaming.length) return null;
    var article = streaming[streaming.length - 1].closest("article");
    return article && article.querySelector("button.stop");
  }
  function updateComposer() {
    var form = composer();
    if (!form) return;
    var send = form.querySelector(".composer__send");
    var stop = form.querySelector(".composer__stop");
    if (!send || !stop) return;
    var streaming = streamingStop() !== null;
    send.hidden = streaming;
    stop.hidden = !streaming;
  }
  document.addEventListener("click", function (event) {
    if (!event.target.closest || !event.target.closest(".composer__stop")) return;
    var stop = streamingStop();
    if (stop) stop.click();
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && !event.isComposing) {
      var stop = streamingStop();
      if (stop) { event.preventDefault(); stop.click(); }
    }
    // Ctrl+Shift+O (as in ChatGPT): a new chat.
    if ((event.ctrlKey || event.metaKey) && event.shiftKey && (event.key === "O" || event.key === "o")) {
      var link = document.querySelector("a.new-chat");
      if (link) { event.preventDefault(); window.location.assign(link.href); }
    }
  });
  document.body.addEventListener("htmx:sseClose", updateComposer);

  // The page follows the reply while the member is at the bottom; once they scroll up it
  // stops, and "Jump to latest" brings them back.
  var following = true;
  function jumpButton() { return document.getElementById("jump-to-latest"); }
  function watchScrolling() {
    var list = document.getElementById("messages");
    if (!list) return;
    // The member scrolling up (wheel, touch, keys) stops the following at once, before a token
    // that arrives meanwhile could pull the page back down; reaching the bottom resumes it.
    function leave() {
      following = false;
      var jump = jumpButton();
      if (jump && !nearEnd()) jump.hidden = false;
    }
    list.addEventListener("wheel", function (event) { if (event.deltaY < 0) leave(); },
                          {passive: true});
    list.addEventListener("touchmove", leave, {passive: true});
    list.addEventListener("keydown", function (event) {
      if (["ArrowUp", "PageUp", "Home"].indexOf(event.key) >= 0) leave();
    });
    list.addEventListener("scroll", function () {
      if (nearEnd()) following = true;
      var jump = jumpButton();
      if (jump) jump.hidden = following || nearEnd();
    });
    var jump = jumpButton();
    if (jump) jump.addEventListener("click", function () {
      following = true;
      jump.hidden = true;
      scrollToEnd();
    });
  }
  document.body.addEventListener("htmx:sseMessage", function () {
    if (following) scrollToEnd();
  });

  // Picking a preset fills in its model and chat settings (the member can still change them).
  document.addEventListener("change", function (event) {
    var select = event.target;
    if (!select.classList || !select.classList.contains("chat-settings__preset")) return;
    var option = select.options[select.selectedIndex];
    var form = select.form;
    if (!form || !option || !option.value) return;
    form.elements.instructions.value = option.getAttribute("data-instructions") || "";
    form.elements.temperature.value = option.getAttribute("data-temperature") || "";
    form.elements.max_length.value = option.getAttribute("data-max-length") || "";
    if (form.elements.reasoning_effort) {
      form.elements.reasoning_effort.value = option.getAttribute("data-reasoning-effort") || "";
    }
    var model = option.getAttribute("data-model");
    if (model && form.elements.model.querySelector('option[value="' + CSS.escape(model) + '"]')) {
      form.elements.model.value = model;
    }
    showModelSettings();
  });

  // The chat settings that apply to the model chosen: a reasoning effort for a reasoning model,
  // a temperature for one that takes it (the model's option says so, from the catalog).
  // Without a script all are shown, and the server sends each model only what it accepts.
  function showModelSettings() {
    var form = composer();
    var select = form && form.elements.model;
    if (!select || !select.options) return;
    var option = select.options[select.selectedIndex];
    var reasoning = !!option && option.hasAttribute("data-reasoning");
    var temperature = !option || !option.hasAttribute("data-no-temperature");
    form.querySelectorAll(".chat-settings__effort").forEach(function (part) {
      part.hidden = !reasoning;
    });
    form.querySelectorAll(".chat-settings__temperature").forEach(function (part) {
      part.hidden = !temperature;
    });
  }
  document.addEventListener("change", function (event) {
    if (event.target && event.target.name === "model" && event.target.form &&
        event.target.form.id === "composer") {
      showModelSettings();
    }
  });

  // A finished block of the reply arrives rendered: it replaces the text of the open tail.
  document.body.addEventListener("htmx:sseBeforeMessage", function (event) {
    if (!event.detail || event.detail.type !== "block" || !event.target.closest) return;
    var article = event.target.closest("article");
    var tail = article && article.querySelector(".message__tail");
    if (tail) tail.textContent = "";
  });

  // On a phone the conversation list is a menu.
  function setMenu(open) {
    var layout = document.querySelector(".layout");
    var toggle = document.querySelector(".menu-toggle");
    if (!layout || !toggle) return;
    layout.classList.toggle("layout--menu-open", open);
    toggle.setAttribute("aria-expanded", open ? "true" : "false");
    if (open) {
      var first = document.querySelector("#sidebar a");
      if (first) first.focus();
    }
  }
  document.addEventListener("click", function (event) {
    if (!event.target.closest) return;
    if (event.target.closest(".menu-toggle")) {
      var layout = document.querySelector(".layout");
      setMenu(!(layout && layout.classList.contains("layout--menu-open")));
    } else if (!event.target.closest("#sidebar")) {
      setMenu(false);
    }
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") setMenu(false);
  });

  // "Share" opens the conversation's sharing section; without JavaScript it is always shown.
  function enableShareToggle() {
    var toggle = document.querySelector(".share-toggle");
    var section = document.getElementById("share");
    if (!toggle || !section) return;
    var open = window.location.hash === "#share";
    section.hidden = !open;
    toggle.hidden = false;
    toggle.setAttribute("aria-expanded", open ? "true" : "false");
    toggle.addEventListener("click", function () {
      section.hidden = !section.hidden;
      toggle.setAttribute("aria-expanded", section.hidden ? "false" : "true");
      if (!section.hidden) section.querySelector("select, input:not([type=hidden])").focus();
    });
  }
  document.addEventListener("DOMContentLoaded", enableShareToggle);

  // The "Dark mode" switch of a member who has not chosen shows what the system shows.
  function showSystemTheme() {
    var dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
    document.querySelectorAll("button[role=switch][data-follows-system]").forEach(function (button) {
      button.setAttribute("aria-checked", dark ? "true" : "false");
      var value = button.form && button.form.elements.theme;
      if (value) value.value = dark ? "light" : "dark";
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    showModelSettings();
    showSystemTheme();
    addCopyButtons(document);
    enableMessageCopy(document);
    updateComposer();
    watchScrolling();
    // Opened at a message (a search result links to #message-<id>): show it, not the end.
    var target = window.location.hash.slice(1);
    var message = target && document.getElementById(target);
    if (message && message.classList.contains("message")) {
      following = false;
      message.scrollIntoView({block: "center"});
    } else {
      scrollToEnd();
    }
  });
})();
