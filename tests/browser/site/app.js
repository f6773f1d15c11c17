// Shared by every test page: wires the three ways a person attaches a photo
// (file picker, drag-and-drop onto the composer, paste) to the page's own upload
// function, and reports the outcome in #status for the test (and the screenshot).
// upload(file) must resolve to the number of bytes the server says it received.
"use strict";
window.TestSite = {
  wire(upload) {
    const status = document.getElementById("status");
    const preview = document.getElementById("preview");
    const input = document.getElementById("file");
    const drop = document.getElementById("drop");

    async function attach(file, how) {
      if (!file) return;
      status.dataset.state = "uploading";
      status.textContent = `Uploading ${file.name} (${how})…`;
      preview.src = URL.createObjectURL(file);
      preview.hidden = false;
      try {
        const received = await upload(file);
        if (received !== file.size) {
          throw new Error(`the server received ${received} bytes, the file has ${file.size}`);
        }
        status.dataset.state = "done";
        status.textContent = `✓ Uploaded ${file.name}: ${file.size} bytes (${how}).`;
      } catch (err) {
        status.dataset.state = "failed";
        status.textContent = `✗ Upload failed: ${err.message}`;
      }
    }

    input.addEventListener("change", () => attach(input.files[0], "file picker"));
    drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      attach(e.dataTransfer.files[0], "drag and drop");
    });
    document.addEventListener("paste", (e) => {
      const item = [...e.clipboardData.items].find((i) => i.kind === "file");
      if (!item) return;
      e.preventDefault();
      attach(item.getAsFile(), "paste");
    });
  },
};
