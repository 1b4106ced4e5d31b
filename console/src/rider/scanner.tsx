// QR scanning with the browser's BarcodeDetector (Chrome on Android, Safari 17+); elsewhere the
// rider types the code printed on the bike.
import { useEffect, useRef, useState } from "preact/hooks";
import { errorText } from "../common/api";
import { t } from "../common/i18n";

interface Detector {
  detect(source: HTMLVideoElement): Promise<{ rawValue: string }[]>;
}
declare global {
  interface Window {
    BarcodeDetector?: new (opts: { formats: string[] }) => Detector;
  }
}

export function scanSupported(): boolean {
  return typeof window.BarcodeDetector === "function" && !!navigator.mediaDevices?.getUserMedia;
}

/** The bike id inside a scanned code: a plain id, or a URL with `?bike=` or ending in the id. */
export function bikeFromCode(raw: string): string {
  try {
    const u = new URL(raw);
    return u.searchParams.get("bike") ?? u.pathname.split("/").filter(Boolean).pop() ?? raw;
  } catch {
    return raw.trim();
  }
}

export function Scanner(props: { onCode: (code: string) => void; onClose: () => void }) {
  const video = useRef<HTMLVideoElement>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let stream: MediaStream | undefined;
    let stop = false;
    (async () => {
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
      const v = video.current!;
      v.srcObject = stream;
      await v.play();
      const detector = new window.BarcodeDetector!({ formats: ["qr_code"] });
      while (!stop) {
        const found = await detector.detect(v).catch(() => []);
        if (found.length) {
          props.onCode(bikeFromCode(found[0].rawValue));
          return;
        }
        await new Promise((r) => setTimeout(r, 250));
      }
    })().catch((e) => setError(errorText(e)));
    return () => {
      stop = true;
      stream?.getTracks().forEach((tr) => tr.stop());
    };
  }, []);
  return (
    <div class="scanner">
      <p>{t("rider.scanning")}</p>
      <video ref={video} playsInline muted />
      {error && <p class="error">{error}</p>}
      <button onClick={props.onClose}>{t("common.close")}</button>
    </div>
  );
}
