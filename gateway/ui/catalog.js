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

// The search form sends only what was chosen: "/?q=weather", not every empty filter (the
// pager's links are written the same way). Without script the form still works, just wordier.
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form.search");
  if (!form) return;
  for (const field of form.querySelectorAll("input[name], select[name]")) {
    const unchosen = field.value === "" || (field.name === "sort" && field.value === "name");
    if (unchosen) field.disabled = true;
  }
  // Re-enabled after the browser read the form, for when the page is shown again from history.
  setTimeout(() => {
    for (const field of form.querySelectorAll("[disabled]")) field.disabled = false;
  }, 0);
});
