// Follows a running job's log over Server-Sent Events. Each "log" event
// carries HTML the server rendered (ANSI colours to spans, text escaped);
// "end" carries the run's final status.
(function () {
  var log = document.getElementById("log");
  var url = log && log.getAttribute("data-events");
  if (!url) return;
  var source = new EventSource(url);
  source.addEventListener("log", function (event) {
    log.insertAdjacentHTML("beforeend", event.data + "\n");
  });
  source.addEventListener("end", function (event) {
    var status = document.getElementById("status");
    if (status) {
      status.textContent = event.data;
      status.className = "status " + event.data.replace(/ /g, "");
    }
    source.close();
  });
})();
