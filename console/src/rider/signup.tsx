import { useState } from "preact/hooks";
import { errorText, request } from "../common/api";
import { LangSwitch, t } from "../common/i18n";
import { saveRiderSession, tenantFromUrl } from "./auth";

interface SignUpAnswer {
  rider: { id: string };
  token: string;
}

export function SignUp(props: { onDone: () => void }) {
  const [form, setForm] = useState({ phone: "", name: "", real_name: "", id_number: "", location_consent: true });
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const set = (k: keyof typeof form) => (e: Event) => {
    const el = e.currentTarget as HTMLInputElement;
    setForm({ ...form, [k]: el.type === "checkbox" ? el.checked : el.value });
  };

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    const tenant = tenantFromUrl();
    try {
      const a = await request<SignUpAnswer>(`/api/v1/rider/${encodeURIComponent(tenant)}/sign-up`, {
        method: "POST",
        body: { ...form, id_number: form.id_number.trim().toUpperCase() },
      });
      saveRiderSession({ token: a.token, tenant, riderId: a.rider.id });
      props.onDone();
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <div class="rider-signup">
      <div class="login-head">
        <h1>{t("rider.signUp")}</h1>
        <LangSwitch />
      </div>
      <form onSubmit={submit} class="stack">
        <label>
          {t("rider.phone")}
          <input name="phone" type="tel" autocomplete="tel" required value={form.phone} onInput={set("phone")} />
        </label>
        <label>
          {t("rider.name")}
          <input name="name" autocomplete="nickname" required value={form.name} onInput={set("name")} />
        </label>
        <label>
          {t("rider.realName")}
          <input name="real_name" autocomplete="name" required value={form.real_name} onInput={set("real_name")} />
        </label>
        <label>
          {t("rider.idNumber")}
          <input
            name="id_number"
            required
            minLength={18}
            maxLength={18}
            autocomplete="off"
            value={form.id_number}
            onInput={set("id_number")}
          />
        </label>
        <p class="muted small">{t("rider.realNameNote")}</p>
        <label class="check">
          <input name="location_consent" type="checkbox" checked={form.location_consent} onChange={set("location_consent")} />
          {t("rider.consent")}
        </label>
        {error && <p class="error" role="alert">{error}</p>}
        <button class="primary big" type="submit" disabled={busy} data-testid="signup-submit">
          {t("rider.signUpSubmit")}
        </button>
      </form>
    </div>
  );
}
