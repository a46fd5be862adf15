// The partner API's docs (/schema): Swagger UI, served by the app from the
// swagger-ui-bundle-v2 package (web/api_docs.py), over the app's own OpenAPI document.
// Nothing is fetched from another host: no validator badge, no remote spec.
(function () {
  "use strict";
  var holder = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: holder.getAttribute("data-schema"),
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    oauth2RedirectUrl: new URL(holder.getAttribute("data-oauth2-redirect"),
                               window.location.href).href,
    presets: [SwaggerUIBundle.presets.apis]
  });
})();
