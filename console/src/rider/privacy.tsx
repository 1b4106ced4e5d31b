// PIPL rights: location consent, a copy of everything stored, erasure.
import { useEffect, useState } from "preact/hooks";
import { errorText } from "../common/api";
import { t } from "../common/i18n";
import { forgetRider, riderApi } from "./auth";

export function Privacy() {
  const [consent, setConsent] = useState<boolean | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    riderApi<{ rider: { location_consent: boolean } }>("/api/v1/rider/me")
      .then((r) => setConsent(r.rider.location_consent))
      .catch((e) => setError(errorText(e)));
  }, []);

  const toggle = async (value: boolean) => {
    try {
      const r = await riderApi<{ rider: { location_consent: boolean } }>("/api/v1/rider/me/consent", {
        method: "PUT",
        body: { location: value },
      });
      setConsent(r.rider.location_consent);
    } catch (e) {
      setError(errorText(e));
    }
  };
  const exportData = async () => {
    try {
      const data = await riderApi<unknown>("/api/v1/rider/me/export");
      const url = URL.createObjectURL(new Blob([JSON.stringify(data, null, 2)], { type: "application/json" }));
      const a = document.createElement("a");
      a.href = url;
      a.download = "wulian-rider-data.json";
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
    } catch (e) {
      setError(errorText(e));
    }
  };
  const erase = async () => {
    if (!confirm(t("rider.deleteConfirm"))) return;
    try {
      await riderApi("/api/v1/rider/me", { method: "DELETE" });
      alert(t("rider.deleted"));
      forgetRider();
    } catch (e) {
      setError(errorText(e));
    }
  };

  return (
    <div class="pad stack">
      <label class="check">
        <input type="checkbox" checked={!!consent} disabled={consent === null} onChange={(e) => toggle(e.currentTarget.checked)} />
        {t("rider.consentToggle")}
      </label>
      <button onClick={exportData}>{t("rider.export")}</button>
      <button class="danger" onClick={erase}>
        {t("rider.delete")}
      </button>
      {error && <p class="error">{error}</p>}
    </div>
  );
}
