// Balance, sandbox top-ups, ride passes and the statement.
import { useEffect, useState } from "preact/hooks";
import { errorText, newIdempotencyKey } from "../common/api";
import { fmtMoney, fmtTime, t } from "../common/i18n";
import { riderApi } from "./auth";

interface WalletView {
  currency: string;
  balance: number;
  max_top_up: number;
  statement: { amount: number; balance_after: number; created_at: number; kind: string; memo: string }[];
  passes: { pass_id?: string; product?: string; expires_at?: number; valid_until?: number }[];
  pass_products: { id: string; name: string; price: number; duration_days: number; free_minutes_per_ride: number }[];
}

const AMOUNTS = [1000, 2000, 5000];

export function Wallet() {
  const [w, setW] = useState<WalletView | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [note, setNote] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const load = () =>
    riderApi<WalletView>("/api/v1/rider/wallet")
      .then(setW)
      .catch((e) => setError(errorText(e)));
  useEffect(() => {
    load();
  }, []);

  const act = async (path: string, body: Record<string, unknown>) => {
    setBusy(true);
    setError(null);
    setNote(null);
    try {
      const r = await riderApi<{ balance: number }>(path, {
        method: "POST",
        body: { ...body, idempotency_key: newIdempotencyKey() },
      });
      setNote(t("rider.toppedUp", { amount: fmtMoney(r.balance, w?.currency) }));
      await load();
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  };

  if (!w) return <p class="muted pad">{error ?? t("common.loading")}</p>;
  return (
    <div class="wallet pad">
      <p class="label">{t("rider.balance")}</p>
      <p class="balance" data-testid="balance">
        {fmtMoney(w.balance, w.currency)}
      </p>
      <div class="row wrap">
        {AMOUNTS.map((a) => (
          <button
            class="primary"
            disabled={busy || a > w.max_top_up}
            data-testid={`top-up-${a}`}
            onClick={() => act("/api/v1/rider/wallet/top-ups", { amount: a })}
          >
            {t("rider.topUp", { amount: fmtMoney(a, w.currency) })}
          </button>
        ))}
      </div>
      {note && <p class="ok" role="status">{note}</p>}
      {error && <p class="error" role="alert">{error}</p>}
      <h2>{t("rider.passes")}</h2>
      <ul class="list">
        {w.pass_products.map((p) => (
          <li class="row">
            <span>
              <strong>{p.name}</strong>
              <br />
              <span class="muted small">
                {t("rider.passFree", { minutes: p.free_minutes_per_ride, days: p.duration_days })}
              </span>
            </span>
            <button disabled={busy || p.price > w.balance} onClick={() => act("/api/v1/rider/wallet/passes", { pass_id: p.id })}>
              {t("rider.buyPass", { amount: fmtMoney(p.price, w.currency) })}
            </button>
          </li>
        ))}
      </ul>
      <h2>{t("rider.statement")}</h2>
      <table class="grid compact">
        <tbody>
          {w.statement
            .slice()
            .reverse()
            .map((s) => (
              <tr>
                <td class="muted">{fmtTime(s.created_at)}</td>
                <td>{s.memo || s.kind}</td>
                <td class="num">{fmtMoney(s.amount, w.currency)}</td>
              </tr>
            ))}
        </tbody>
      </table>
    </div>
  );
}
