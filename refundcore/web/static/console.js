// Live batch progress: the only script of the console, which works without it.
// Polls the progress endpoint while a batch on the page is unfinished and updates the
// progress bars and counts in place (text only: nothing is parsed as HTML).
(function () {
  "use strict";
  var source = document.querySelector("[data-progress-url]");
  if (!source || !window.fetch) {
    return;
  }
  var url = source.getAttribute("data-progress-url");
  var every = 2000;

  function each(selector, name, id, update) {
    document.querySelectorAll(selector).forEach(function (element) {
      if (element.getAttribute(name) === id) {
        update(element);
      }
    });
  }

  function show(batch) {
    each("progress[data-batch]", "data-batch", batch.id, function (bar) {
      bar.max = batch.rows;
      bar.value = batch.done;
      bar.textContent = batch.done + " / " + batch.rows;
    });
    each("[data-batch-text]", "data-batch-text", batch.id, function (text) {
      text.textContent = batch.done + " / " + batch.rows + " done" +
        (batch.claimed ? ", " + batch.claimed + " in flight" : "");
    });
    each("[data-batch-outcomes]", "data-batch-outcomes", batch.id, function (box) {
      while (box.firstChild) {
        box.removeChild(box.firstChild);
      }
      Object.keys(batch.outcomes).sort().forEach(function (word) {
        var badge = document.createElement("span");
        badge.className = "state state-" + word.toLowerCase();
        badge.textContent = word + " " + batch.outcomes[word];
        box.appendChild(badge);
        box.appendChild(document.createTextNode(" "));
      });
    });
  }

  function unfinished(batches) {
    var shown = {};
    document.querySelectorAll("progress[data-batch]").forEach(function (bar) {
      shown[bar.getAttribute("data-batch")] = true;
    });
    return batches.some(function (batch) {
      return shown[batch.id] && batch.done < batch.rows;
    });
  }

  function poll() {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (data) {
        data.batches.forEach(show);
        if (unfinished(data.batches)) {
          window.setTimeout(poll, every);
        }
      })
      .catch(function () {
        // The page still shows the last known progress; reloading tries again.
      });
  }

  window.setTimeout(poll, every);
})();
