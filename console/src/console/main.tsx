import { render } from "preact";
import "../common/style.css";
import { App } from "./app";

render(<App />, document.getElementById("app")!);
