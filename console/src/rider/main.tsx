import { render } from "preact";
import "../common/style.css";
import "./rider.css";
import { App } from "./app";

render(<App />, document.getElementById("app")!);

if ("serviceWorker" in navigator && location.protocol !== "file:") {
  addEventListener("load", () => {
    navigator.serviceWorker.register("/rider/sw.js", { scope: "/rider/" }).catch(() => undefined);
  });
}
