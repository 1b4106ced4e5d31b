// A tiny history router: the path under the app's base, navigation and links.
import type { ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";

export function navigate(to: string, replace = false): void {
  if (replace) history.replaceState(null, "", to);
  else history.pushState(null, "", to);
  dispatchEvent(new PopStateEvent("popstate"));
}

/** The current path below `base` ("/console/devices/x" → ["devices", "x"]). */
export function useRoute(base: string): string[] {
  const read = () =>
    location.pathname
      .slice(base.length)
      .split("/")
      .filter(Boolean)
      .map(decodeURIComponent);
  const [parts, setParts] = useState(read);
  useEffect(() => {
    const f = () => setParts(read());
    addEventListener("popstate", f);
    return () => removeEventListener("popstate", f);
  }, []);
  return parts;
}

export function Link(props: {
  href: string;
  class?: string;
  children: ComponentChildren;
  "data-testid"?: string;
}) {
  return (
    <a
      href={props.href}
      class={props.class}
      data-testid={props["data-testid"]}
      onClick={(e) => {
        if (e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey) return;
        e.preventDefault();
        navigate(props.href);
      }}
    >
      {props.children}
    </a>
  );
}
