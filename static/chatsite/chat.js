// chatsite's own behaviour on top of htmx: keyboard sending, composer reset, stream resume.
// No inline scripts anywhere: the Content-Security-Policy allows scripts from this site only.
(function () {
  "use strict";

  function composer() {
    return document.getElementById("composer");
  }

  // Enter sends; Shift+Enter adds a line.
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
    if (!target || target.name !== "content" || !target.form || target.form.id !== "composer") return;
    event.preventDefault();
    if (target.value.trim() !== "") target.form.requestSubmit();
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
    scrollToEnd();
  });

  // A failed request (network down, server error) keeps what was typed and says so.
  document.body.addEventListener("htmx:responseError", function (event) {
    showError(event.detail.xhr.status >= 500
      ? "The server had a problem. Your message is still in the box; try again."
      : "The request was refused (" + event.detail.xhr.status + "). Reload the page and try again.");
  });
  document.body.addEventListener("htmx:sendError", function () {
    showError("The server cannot be reached. Your message is still in the box; try again.");
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
    if (nearEnd()) scrollToEnd();
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
      button.textContent = "Copy";
      button.setAttribute("aria-label", "Copy code");
      button.addEventListener("click", function () {
        var code = pre.querySelector("code") || pre;
        navigator.clipboard.writeText(code.innerText).then(function () {
          button.textContent = "Copied";
          setTimeout(function () { button.textContent = "Copy"; }, 1500);
        });
      });
      pre.appendChild(button);
    });
  }
  document.body.addEventListener("htmx:afterSettle", function (event) {
    addCopyButtons(event.target.parentNode || document);
  });

  document.addEventListener("DOMContentLoaded", function () {
    addCopyButtons(document);
    scrollToEnd();
  });
})();
