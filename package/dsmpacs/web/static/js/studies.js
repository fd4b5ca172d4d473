/* Study page: "send to" runs on the server in the background; this polls its progress. */
(function () {
  "use strict";
  var form = document.querySelector("[data-form=send]");
  if (!form || !form.querySelector("select[name=peer]")) { return; }
  var status = form.querySelector("[data-send-status]");
  var button = form.querySelector("[data-action=send]");

  function show(job) {
    status.textContent = window.DSM.t("js.send." + job.state, {
      sent: job.sent, failed: job.failed, total: job.total, peer: job.peer
    });
    status.setAttribute("data-state", job.state);
    // The reason as a code the catalogs translate; job.message is the English detail for API clients.
    if (job.reason) { status.textContent += " " + window.DSM.t("js.send.reason." + job.reason); }
  }

  function poll(url) {
    window.DSM.fetch(url).then(function (r) { return r.json(); }).then(function (job) {
      show(job);
      if (job.state === "running") { window.setTimeout(function () { poll(url); }, 500); }
      else { button.disabled = false; }
    }).catch(function () { status.textContent = window.DSM.t("js.send.lost"); button.disabled = false; });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    button.disabled = true;
    status.textContent = window.DSM.t("js.send.starting");
    window.DSM.fetch(form.action, { method: "POST", body: new FormData(form) }).then(function (r) {
      return r.json().then(function (body) { return { ok: r.ok, body: body }; });
    }).then(function (answer) {
      if (!answer.ok) { throw new Error(answer.body.title || ""); }
      show(answer.body);
      poll(form.getAttribute("data-progress-url").replace("JOB", answer.body.id));
    }).catch(function (e) {
      status.textContent = window.DSM.t("js.send.refused") + " " + (e.message || "");
      button.disabled = false;
    });
  });
}());
