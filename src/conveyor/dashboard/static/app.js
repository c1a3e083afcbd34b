// Conveyor dashboard: keeps the page's live region current, and a few small conveniences.
//
// Every REFRESH_MS, while the tab is visible, the page asks its own URL again with the
// header X-Conveyor-Partial: 1; the server answers with the fragment of the live region
// only, and the region is patched in place to match it (never a full reload). Nothing is
// refreshed while the reader types in a form field or selects text in the region; open
// <details> and ticked boxes stay as they were.
(function () {
  "use strict";

  var REFRESH_MS = 2000;
  var live = document.getElementById("live");
  var state = document.getElementById("live-state");
  var timer = null;
  var inFlight = false;
  var failures = 0;
  var lastHtml = null;

  function setState(name, label) {
    if (!state) return;
    state.setAttribute("data-state", name);
    var text = state.querySelector(".live-label");
    if (text) text.textContent = label;
  }

  function busyWithForm() {
    var el = document.activeElement;
    if (el && /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName) && el.type !== "checkbox" && el.type !== "submit") {
      return true;
    }
    var sel = window.getSelection && window.getSelection();
    return !!(sel && !sel.isCollapsed && live && live.contains(sel.anchorNode));
  }

  // Patch the live region into the new fragment node by node, so that whatever did not change
  // stays the same element: a button under the pointer, an open <details>, a ticked box, the
  // scroll position of a long output. Nodes pair up by position; elements also by tag, id
  // and data-key, and an element that does not pair is replaced.
  function same(a, b) {
    if (a.nodeType !== b.nodeType) return false;
    if (a.nodeType !== 1) return true;
    return a.tagName === b.tagName && a.id === b.id && a.getAttribute("data-key") === b.getAttribute("data-key");
  }

  function syncAttributes(from, to) {
    var keepOpen = from.tagName === "DETAILS";
    Array.prototype.slice.call(from.attributes).forEach(function (attr) {
      if (!to.hasAttribute(attr.name) && !(keepOpen && attr.name === "open")) from.removeAttribute(attr.name);
    });
    Array.prototype.forEach.call(to.attributes, function (attr) {
      if (keepOpen && attr.name === "open") return;
      if (from.getAttribute(attr.name) !== attr.value) from.setAttribute(attr.name, attr.value);
    });
  }

  function morphChildren(from, to) {
    var a = from.firstChild, b = to.firstChild;
    while (b) {
      var nextB = b.nextSibling;
      if (!a) {
        from.appendChild(b);
      } else if (same(a, b)) {
        if (a.nodeType === 1) {
          syncAttributes(a, b);
          morphChildren(a, b);
        } else if (a.nodeValue !== b.nodeValue) {
          a.nodeValue = b.nodeValue;
        }
        a = a.nextSibling;
      } else {
        var nextA = a.nextSibling;
        from.replaceChild(b, a);
        a = nextA;
      }
      b = nextB;
    }
    while (a) {
      var rest = a.nextSibling;
      from.removeChild(a);
      a = rest;
    }
  }

  function refresh() {
    if (inFlight || document.hidden || busyWithForm()) return;
    inFlight = true;
    setState("busy", "Live");
    fetch(window.location.href, {
      headers: { "X-Conveyor-Partial": "1" },
      credentials: "same-origin",
      cache: "no-store",
      redirect: "manual"
    }).then(function (response) {
      if (response.status === 401 || response.type === "opaqueredirect") {
        window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname + window.location.search));
        return null;
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.text();
    }).then(function (html) {
      if (html === null) return;
      failures = 0;
      setState("live", "Live");
      if (html === lastHtml || busyWithForm()) return;
      var next = live.cloneNode(false);
      next.innerHTML = html;
      morphChildren(live, next);
      lastHtml = html;
      enhance(live);
    }).catch(function () {
      failures += 1;
      setState("offline", failures > 1 ? "Offline" : "Retrying");
    }).finally(function () {
      inFlight = false;
    });
  }

  function start() {
    if (!live || live.getAttribute("data-live") === "off") {
      if (state) state.hidden = true;  // nothing on this page changes by itself
      return;
    }
    if (timer) return;
    timer = window.setInterval(refresh, REFRESH_MS);
    setState("live", "Live");
  }

  function stop() {
    if (timer) window.clearInterval(timer);
    timer = null;
    setState("idle", "Paused");
  }

  // Times: the server writes UTC; the tooltip shows the reader's own time zone.
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d.getTime())) t.title = d.toLocaleString() + " (" + t.getAttribute("title") + ")";
    });
  }

  function syncSelection(root) {
    var boxes = root.querySelectorAll("input[name=selected]");
    var any = Array.prototype.some.call(boxes, function (b) { return b.checked; });
    root.querySelectorAll("[data-needs-selection]").forEach(function (b) { b.disabled = !any; });
    var all = root.querySelector("[data-select-all]");
    if (all) all.checked = boxes.length > 0 && Array.prototype.every.call(boxes, function (b) { return b.checked; });
  }

  function enhance(root) {
    localTimes(root);
    syncSelection(root);
  }

  document.addEventListener("change", function (e) {
    var target = e.target;
    if (target.matches && target.matches("[data-select-all]")) {
      var form = target.closest("form") || document;
      form.querySelectorAll("input[name=selected]").forEach(function (b) { b.checked = target.checked; });
    }
    if (target.matches && target.matches("input[type=checkbox]")) syncSelection(document);
  });

  document.addEventListener("click", function (e) {
    var el = e.target.closest ? e.target.closest("[data-confirm]") : null;
    if (el && !window.confirm(el.getAttribute("data-confirm"))) {
      e.preventDefault();
      return;
    }
    var copy = e.target.closest ? e.target.closest("[data-copy]") : null;
    if (copy && navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(copy.getAttribute("data-copy")).then(function () {
        copy.classList.add("copied");
        window.setTimeout(function () { copy.classList.remove("copied"); }, 900);
      }, function () { /* the reader can still select the text */ });
    }
  });

  // Keep the submit buttons of a form from being pressed twice while it is sent.
  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (form.method && form.method.toLowerCase() === "post") {
      window.setTimeout(function () {
        form.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = true; });
      }, 0);
    }
  });

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      stop();
    } else {
      start();
      refresh();
    }
  });

  // Back to a page from the history cache: its buttons may still be disabled from the submit.
  window.addEventListener("pageshow", function () {
    document.querySelectorAll("button[type=submit]:disabled").forEach(function (b) {
      if (!b.hasAttribute("data-needs-selection")) b.disabled = false;
    });
    syncSelection(document);
  });

  enhance(document);
  if (!document.hidden) start();
})();
