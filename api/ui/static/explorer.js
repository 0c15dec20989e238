// taskq trace explorer: loads the view of this URL from /ui/fragments with the API key
// kept in sessionStorage (never in a URL), and adds keyboard navigation to the results.
"use strict";

(function () {
  const KEY = "taskq.apiKey";
  const HEADER = "X-API-Key";
  const view = document.getElementById("view");
  const keyForm = document.getElementById("key-form");
  const keyInput = document.getElementById("api-key");
  const keyReason = document.getElementById("key-reason");
  const forget = document.getElementById("forget-key");

  function fragmentUrl() {
    // /ui/traces/x -> /ui/fragments/traces/x, keeping the query string.
    const rest = window.location.pathname.replace(/^\/ui/, "") || "/";
    return "/ui/fragments" + rest + window.location.search;
  }

  function showKeyForm(reason) {
    keyReason.textContent = reason;
    keyForm.hidden = false;
    view.replaceChildren();
    keyInput.focus();
  }

  async function load() {
    const headers = { Accept: "text/html" };
    const key = sessionStorage.getItem(KEY);
    if (key) {
      headers[HEADER] = key;
    }
    forget.hidden = !key;
    let answer;
    try {
      answer = await fetch(fragmentUrl(), { headers: headers, credentials: "same-origin" });
    } catch (err) {
      view.replaceChildren(message("The stack cannot be reached: " + err));
      return;
    }
    if (answer.status === 401 || answer.status === 403) {
      sessionStorage.removeItem(KEY);
      showKeyForm(answer.status === 401
        ? "This stack requires an API key."
        : "That API key is not accepted; enter another.");
      return;
    }
    keyForm.hidden = true;
    const type = answer.headers.get("content-type") || "";
    if (type.startsWith("text/html")) {
      // Server-rendered and autoescaped; the page's CSP runs no inline script.
      view.innerHTML = await answer.text();
    } else {
      let text = answer.status + " " + answer.statusText;
      try {
        const body = await answer.json();
        text = (body.error && body.error.message) || JSON.stringify(body);
      } catch (err) { /* not JSON: keep the status line */ }
      view.replaceChildren(message(text));
    }
    const title = view.querySelector("h1");
    document.title = (title ? title.textContent + " · " : "") + "taskq trace explorer";
    const first = view.querySelector("#results a.result");
    const box = view.querySelector("#q");
    if (first && window.location.search) {
      first.focus();
    } else if (box && !window.location.search) {
      box.focus();
    }
  }

  function message(text) {
    const p = document.createElement("p");
    p.className = "error";
    p.textContent = text;
    return p;
  }

  keyForm.addEventListener("submit", function (event) {
    event.preventDefault(); // the key must never become a query string
    const key = keyInput.value.trim();
    keyInput.value = "";
    if (key) {
      sessionStorage.setItem(KEY, key);
      load();
    }
  });

  forget.addEventListener("click", function () {
    sessionStorage.removeItem(KEY);
    window.location.reload();
  });

  // Arrow keys move through the result list; "/" jumps to the search box.
  document.addEventListener("keydown", function (event) {
    const links = Array.from(view.querySelectorAll("#results a.result"));
    const at = links.indexOf(document.activeElement);
    if ((event.key === "ArrowDown" || event.key === "ArrowUp") && links.length) {
      const next = event.key === "ArrowDown" ? Math.min(at + 1, links.length - 1)
        : Math.max(at - 1, 0);
      links[at < 0 ? 0 : next].focus();
      event.preventDefault();
    } else if (event.key === "/" && !/^(INPUT|TEXTAREA)$/.test(document.activeElement.tagName)) {
      const box = view.querySelector("#q");
      if (box) {
        box.focus();
        event.preventDefault();
      }
    }
  });

  load();
})();
