// Boots the vendored Swagger UI on /openapi.json (kept out of docs.html: the CSP allows no inline script).
"use strict";

(() => {
  const root = document.getElementById("swagger-ui");
  window.SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    deepLinking: true,
    // Do not phone home to validator.swagger.io with our document.
    validatorUrl: null,
    tryItOutEnabled: false,
    displayRequestDuration: true,
  });
})();
