// The tenant's people (admins only): list, create with a role, change role, reset a password
// (shown once), delete; and every signed-in person's own password. The API decides who may do
// what; the screens hide what the caller's role cannot do and show the API's refusal otherwise.
import { useEffect, useState } from "preact/hooks";
import { ApiError, errorText } from "../common/api";
import { fmtTime, t, type MsgKey } from "../common/i18n";
import { api, currentAuth, type Auth } from "./auth";

export const ROLES = ["admin", "operator", "viewer", "city_regulator"] as const;
export type Role = (typeof ROLES)[number];

/** Whether the caller may change things (acknowledge, save rules). An API key's scope is not
 * known to the console: it is offered the actions and the API refuses what the key cannot do. */
export function canWrite(auth: Auth | null): boolean {
  if (!auth) return false;
  return auth.kind === "key" || auth.role === "admin" || auth.role === "operator";
}

export function roleName(role: string): string {
  return (ROLES as readonly string[]).includes(role) ? t(`users.role.${role}` as MsgKey) : role;
}

/** An API refusal in words: a 403 names the role needed and the caller's. */
export function refusal(e: unknown, need: MsgKey): string {
  if (e instanceof ApiError && e.status === 403) {
    const auth = currentAuth();
    const role = auth?.kind === "session" ? roleName(auth.role) : t("login.apiKeyUser");
    return `${t(need, { role })} (${e.message})`;
  }
  return t("common.error", { detail: errorText(e) });
}

interface User {
  tenant: string;
  username: string;
  role: string;
  disabled: boolean;
  created_at: number;
  last_login_at: number | null;
  password_changed_at: number;
  password?: string;
}

/** A password shown once, with who it is for. */
interface Shown {
  username: string;
  password: string;
}

export function UsersPage() {
  const auth = currentAuth();
  const [users, setUsers] = useState<User[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [shown, setShown] = useState<Shown | null>(null);
  const [busy, setBusy] = useState<string | null>(null);

  const load = () =>
    api<User[]>("/api/v1/users")
      .then((u) => {
        setUsers(u);
        setError(null);
      })
      .catch((e) => setError(refusal(e, "users.needAdmin")));
  useEffect(() => {
    load();
  }, []);

  const act = async (username: string, f: () => Promise<void>) => {
    setBusy(username);
    setError(null);
    setNotice(null);
    try {
      await f();
    } catch (e) {
      setError(refusal(e, "users.needAdmin"));
    } finally {
      setBusy(null);
    }
  };

  const changeRole = (u: User, role: string) =>
    act(u.username, async () => {
      const updated = await api<User>(`/api/v1/users/${encodeURIComponent(u.username)}`, {
        method: "PATCH",
        body: { role },
      });
      setUsers((list) => list?.map((x) => (x.username === u.username ? updated : x)) ?? null);
      setNotice(t("users.roleChanged", { user: u.username, role: roleName(role) }));
    });

  const resetPassword = (u: User) =>
    act(u.username, async () => {
      if (!confirm(t("users.resetConfirm", { user: u.username }))) return;
      const r = await api<User>(`/api/v1/users/${encodeURIComponent(u.username)}/password`, {
        method: "POST",
        body: {},
      });
      if (r.password) setShown({ username: u.username, password: r.password });
    });

  const remove = (u: User) =>
    act(u.username, async () => {
      if (!confirm(t("users.deleteConfirm", { user: u.username }))) return;
      await api(`/api/v1/users/${encodeURIComponent(u.username)}`, { method: "DELETE" });
      setUsers((list) => list?.filter((x) => x.username !== u.username) ?? null);
      setNotice(t("users.deleted", { user: u.username }));
    });

  const me = auth?.kind === "session" ? auth.user : null;

  return (
    <section>
      <div class="toolbar">
        <h1>{t("users.title")}</h1>
        <span class="muted">{users && t("users.count", { count: users.length })}</span>
      </div>
      {error && (
        <p class="error" role="alert" data-testid="users-error">
          {error}
        </p>
      )}
      {notice && <p class="ok">{notice}</p>}
      {shown && <ShownPassword shown={shown} onClose={() => setShown(null)} />}
      {users && (
        <>
          <CreateUser
            onCreated={(u) => {
              setUsers((list) => [...(list ?? []), u].sort((a, b) => a.username.localeCompare(b.username)));
              if (u.password) setShown({ username: u.username, password: u.password });
              setNotice(t("users.created", { user: u.username, role: roleName(u.role) }));
            }}
          />
          <table class="grid" data-testid="users-table">
            <thead>
              <tr>
                <th>{t("users.username")}</th>
                <th>{t("users.role")}</th>
                <th>{t("users.lastLogin")}</th>
                <th>{t("users.createdAt")}</th>
                <th />
              </tr>
            </thead>
            <tbody>
              {users.map((u) => (
                <tr key={u.username} data-user={u.username}>
                  <td>
                    {u.username}{" "}
                    {u.username === me && <span class="chip">{t("users.you")}</span>}
                    {u.disabled && <span class="chip">{t("users.disabled")}</span>}
                  </td>
                  <td>
                    <select
                      aria-label={t("users.roleOf", { user: u.username })}
                      value={u.role}
                      disabled={busy === u.username || u.username === me}
                      onChange={(e) => changeRole(u, e.currentTarget.value)}
                    >
                      {ROLES.map((r) => (
                        <option value={r}>{roleName(r)}</option>
                      ))}
                    </select>
                  </td>
                  <td>{fmtTime(u.last_login_at)}</td>
                  <td>{fmtTime(u.created_at)}</td>
                  <td>
                    <div class="row">
                      <button disabled={busy === u.username} onClick={() => resetPassword(u)}>
                        {t("users.reset")}
                      </button>
                      {/* The API refuses deleting or demoting oneself; the screen does not offer it. */}
                      <button class="danger" disabled={busy === u.username || u.username === me} onClick={() => remove(u)}>
                        {t("users.delete")}
                      </button>
                    </div>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <p class="muted small">{t("users.roleHelp")}</p>
        </>
      )}
      {!users && !error && <p class="muted">{t("common.loading")}</p>}
    </section>
  );
}

function ShownPassword({ shown, onClose }: { shown: Shown; onClose: () => void }) {
  return (
    <div class="card notice" role="status" data-testid="shown-password">
      <p>
        {t("users.passwordOnce", { user: shown.username })} <code class="secret">{shown.password}</code>
      </p>
      <button onClick={onClose}>{t("users.passwordNoted")}</button>
    </div>
  );
}

function CreateUser({ onCreated }: { onCreated: (u: User) => void }) {
  const [username, setUsername] = useState("");
  const [role, setRole] = useState<Role>("operator");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const body: Record<string, string> = { username: username.trim(), role };
      // Left empty, the server generates a password and returns it once.
      if (password) body.password = password;
      const u = await api<User>("/api/v1/users", { method: "POST", body });
      onCreated(u);
      setUsername("");
      setPassword("");
    } catch (err) {
      setError(refusal(err, "users.needAdmin"));
    } finally {
      setBusy(false);
    }
  };

  return (
    <form class="card user-form" onSubmit={submit} data-testid="user-create">
      <h2>{t("users.create")}</h2>
      <div class="row wrap">
        <label>
          {t("users.username")}
          <input
            name="username"
            value={username}
            required
            autocomplete="off"
            onInput={(e) => setUsername(e.currentTarget.value)}
          />
        </label>
        <label>
          {t("users.role")}
          <select name="role" value={role} onChange={(e) => setRole(e.currentTarget.value as Role)}>
            {ROLES.map((r) => (
              <option value={r}>{roleName(r)}</option>
            ))}
          </select>
        </label>
        <label>
          {t("users.password")}
          <input
            name="password"
            type="password"
            value={password}
            autocomplete="new-password"
            placeholder={t("users.passwordGenerated")}
            onInput={(e) => setPassword(e.currentTarget.value)}
          />
        </label>
        <button class="primary" type="submit" disabled={busy}>
          {t("users.createSubmit")}
        </button>
      </div>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
    </form>
  );
}

/** The signed-in person's account: who they are and a form to change their own password. */
export function AccountPage() {
  const auth = currentAuth();
  const [old, setOld] = useState("");
  const [next, setNext] = useState("");
  const [again, setAgain] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState(false);
  const [busy, setBusy] = useState(false);

  if (auth?.kind !== "session") {
    return (
      <section>
        <h1>{t("users.account")}</h1>
        <p class="muted">{t("users.accountKey")}</p>
      </section>
    );
  }

  const submit = async (e: Event) => {
    e.preventDefault();
    setError(null);
    setDone(false);
    if (next !== again) {
      setError(t("users.mismatch"));
      return;
    }
    setBusy(true);
    try {
      await api("/api/v1/session/password", {
        method: "POST",
        body: { old_password: old, new_password: next },
      });
      setDone(true);
      setOld("");
      setNext("");
      setAgain("");
    } catch (err) {
      if (err instanceof ApiError && err.code === "wrong_password") setError(t("users.wrongPassword"));
      else setError(t("common.error", { detail: errorText(err) }));
    } finally {
      setBusy(false);
    }
  };

  return (
    <section>
      <div class="toolbar">
        <h1>{t("users.account")}</h1>
      </div>
      <div class="card narrow">
        <dl class="facts">
          <dt>{t("users.username")}</dt>
          <dd data-testid="account-user">{auth.user}</dd>
          <dt>{t("login.tenant")}</dt>
          <dd>{auth.tenant}</dd>
          <dt>{t("users.role")}</dt>
          <dd>{roleName(auth.role)}</dd>
        </dl>
      </div>
      <form class="card narrow stack" onSubmit={submit} data-testid="change-password">
        <h2>{t("users.changePassword")}</h2>
        <label>
          {t("users.oldPassword")}
          <input
            type="password"
            name="old"
            value={old}
            required
            autocomplete="current-password"
            onInput={(e) => setOld(e.currentTarget.value)}
          />
        </label>
        <label>
          {t("users.newPassword")}
          <input
            type="password"
            name="new"
            value={next}
            required
            minLength={10}
            autocomplete="new-password"
            onInput={(e) => setNext(e.currentTarget.value)}
          />
          <small class="muted">{t("users.passwordRules")}</small>
        </label>
        <label>
          {t("users.newPasswordAgain")}
          <input
            type="password"
            name="again"
            value={again}
            required
            autocomplete="new-password"
            onInput={(e) => setAgain(e.currentTarget.value)}
          />
        </label>
        {error && (
          <p class="error" role="alert">
            {error}
          </p>
        )}
        {done && <p class="ok">{t("users.passwordChanged")}</p>}
        <div>
          <button class="primary" type="submit" disabled={busy}>
            {t("users.changePasswordSubmit")}
          </button>
        </div>
      </form>
    </section>
  );
}
