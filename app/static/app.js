// scalpscan clinic app: drag-and-drop photos into the visit form, and follow scoring progress.
// No framework and nothing loaded from elsewhere (the page's CSP allows only this file).
"use strict";

function setUpDropzone() {
  const zone = document.getElementById("dropzone");
  const input = document.getElementById("photos");
  const list = document.getElementById("chosen");
  if (!zone || !input) return;
  const show = () => {
    list.replaceChildren(...Array.from(input.files).map((f) => {
      const li = document.createElement("li");
      li.textContent = `${f.name} (${Math.round(f.size / 1024)} kB)`;  // textContent: never parsed as HTML
      return li;
    }));
  };
  input.addEventListener("change", show);
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const all = new DataTransfer();
    for (const f of input.files) all.items.add(f);
    for (const f of e.dataTransfer.files) all.items.add(f);
    input.files = all.files;
    show();
  });
}

function followProgress() {
  const box = document.getElementById("progress");
  if (!box) return;
  const url = box.dataset.status;
  let polls = 0;
  const tick = async () => {
    polls += 1;
    try {
      const answer = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (answer.ok) {
        const s = await answer.json();
        document.getElementById("scored").textContent = String(s.scored);
        document.getElementById("bar").value = s.scored;
        if (s.done) { window.location.reload(); return; }
      }
    } catch (err) { /* the server restarting: try again */ }
    // Poll every second for ten minutes, then every ten seconds.
    window.setTimeout(tick, polls < 600 ? 1000 : 10000);
  };
  window.setTimeout(tick, 500);
}

document.addEventListener("DOMContentLoaded", () => { setUpDropzone(); followProgress(); });
