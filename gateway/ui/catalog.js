// Copy buttons on the catalog pages: the command is in the button's data-copy attribute.
"use strict";
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  try {
    await navigator.clipboard.writeText(button.dataset.copy);
    button.textContent = "Copied";
    button.classList.add("copied");
  } catch (error) {
    button.textContent = "Select and copy";
  }
  setTimeout(() => {
    button.textContent = "Copy";
    button.classList.remove("copied");
  }, 2000);
});
