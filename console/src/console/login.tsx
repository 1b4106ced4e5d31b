import { useState } from "preact/hooks";
import { ApiError, errorText } from "../common/api";
import { LangSwitch, t } from "../common/i18n";
import { signIn, signInWithKey } from "./auth";

export function Login(props: { onDone: () => void }) {
  const [tab, setTab] = useState<"password" | "key">("password");
  const [tenant, setTenant] = useState("default");
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [key, setKey] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      if (tab === "key") await signInWithKey(key.trim());
      else await signIn(tenant.trim(), username.trim(), password);
      props.onDone();
    } catch (err) {
      if (tab === "password" && err instanceof ApiError && (err.status === 404 || err.status === 405)) {
        setError(t("login.unavailable"));
      } else setError(t("login.failed", { detail: errorText(err) }));
    } finally {
      setBusy(false);
    }
  };

  return (
    <div class="login">
      <form class="card login-card" onSubmit={submit}>
        <div class="login-head">
          <h1>{t("login.title")}</h1>
          <LangSwitch />
        </div>
        <div class="tabs" role="tablist">
          <button type="button" role="tab" aria-selected={tab === "password"} onClick={() => setTab("password")}>
            {t("login.tabPassword")}
          </button>
          <button
            type="button"
            role="tab"
            aria-selected={tab === "key"}
            data-testid="tab-key"
            onClick={() => setTab("key")}
          >
            {t("login.tabKey")}
          </button>
        </div>
        {tab === "password" ? (
          <>
            <label>
              {t("login.tenant")}
              <input value={tenant} onInput={(e) => setTenant(e.currentTarget.value)} autocomplete="organization" />
            </label>
            <label>
              {t("login.username")}
              <input
                value={username}
                onInput={(e) => setUsername(e.currentTarget.value)}
                autocomplete="username"
                required
              />
            </label>
            <label>
              {t("login.password")}
              <input
                type="password"
                value={password}
                onInput={(e) => setPassword(e.currentTarget.value)}
                autocomplete="current-password"
                required
              />
            </label>
          </>
        ) : (
          <label>
            {t("login.apiKey")}
            <input
              type="password"
              name="api-key"
              data-testid="api-key"
              value={key}
              onInput={(e) => setKey(e.currentTarget.value)}
              autocomplete="off"
              required
            />
            <small>{t("login.apiKeyHint")}</small>
          </label>
        )}
        {error && <p class="error" role="alert">{error}</p>}
        <button class="primary" type="submit" disabled={busy} data-testid="login-submit">
          {t("login.submit")}
        </button>
      </form>
    </div>
  );
}
