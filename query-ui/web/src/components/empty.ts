// The empty state: how to send data to this collector.

import { h } from "../dom";

/** A panel explaining how to send telemetry, for pages with nothing to show. */
export function emptyState(title: string, what: string): HTMLElement {
  const host = location.hostname || "localhost";
  return h(
    "section",
    { class: "empty", "data-testid": "empty-state" },
    h("h2", null, title),
    h("p", null, what),
    h("p", null, "Point your OpenTelemetry SDKs or collectors at Periscope's OTLP receivers (default ports):"),
    h(
      "ul",
      null,
      h("li", null, "OTLP/gRPC: ", h("code", null, `${host}:4317`)),
      h("li", null, "OTLP/HTTP: ", h("code", null, `http://${host}:4318`), " (", h("code", null, "/v1/logs"), ", ", h("code", null, "/v1/traces"), ", ", h("code", null, "/v1/metrics"), ")"),
    ),
    h("p", null, "For example, with any OpenTelemetry SDK:"),
    h(
      "pre",
      null,
      `export OTEL_EXPORTER_OTLP_ENDPOINT=http://${host}:4318\nexport OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf\nexport OTEL_SERVICE_NAME=my-service`,
    ),
    h("p", null, "Or run ", h("code", null, "periscope demo"), " to see a simulated shop's traffic."),
  );
}
