// Riders: search and list (the API decides what the caller may see: read-only roles get a
// masked phone and no real-name fields, the city none of it), one rider with trips, balance,
// statement and passes, and the refund (operators and admins).
import { useEffect, useState } from "preact/hooks";
import { errorText, newIdempotencyKey, qs } from "../../common/api";
import { fmtMoney, fmtTime, t, type MsgKey } from "../../common/i18n";
import { Link, navigate } from "../../common/router";
import { api } from "../auth";
import { BS, canWrite, type Rider, type StatementLine, type Trip } from "./common";
import { Statement, TripTable } from "./trips";

const PAGE = 50;

interface RiderRow {
  rider: Rider;
  balance: number;
}

export function RiderList() {
  const params = new URLSearchParams(location.search);
  const [search, setSearch] = useState(params.get("search") ?? "");
  const [query, setQuery] = useState(search.trim());
  const [afters, setAfters] = useState<(string | undefined)[]>([undefined]);
  const [rows, setRows] = useState<RiderRow[] | null>(null);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    const h = setTimeout(() => {
      setQuery(search.trim());
      setAfters([undefined]);
    }, 250);
    return () => clearTimeout(h);
  }, [search]);

  useEffect(() => {
    // One character matches too much to be a search; the API wants two or more.
    if (query.length === 1) return;
    const ctl = new AbortController();
    history.replaceState(null, "", location.pathname + qs({ search: query }));
    api<{ riders: RiderRow[] }>(`/api/v1/bikeshare/riders${qs({ search: query, limit: PAGE, after: afters[afters.length - 1] })}`, {
      signal: ctl.signal,
    })
      .then((r) => {
        setRows(r.riders);
        setError(null);
      })
      .catch((e) => {
        if (e.name !== "AbortError") setError(errorText(e));
      });
    return () => ctl.abort();
  }, [query, afters]);

  const last = rows && rows.length === PAGE ? rows[rows.length - 1].rider.id : undefined;
  return (
    <section>
      <div class="toolbar">
        <h1>{t("bs.riders.title")}</h1>
        <input
          type="search"
          class="search"
          placeholder={t("bs.riders.search")}
          value={search}
          onInput={(e) => setSearch(e.currentTarget.value)}
          data-testid="riders-search"
        />
      </div>
      {error && <p class="error" role="alert">{t("common.error", { detail: error })}</p>}
      <table class="grid" data-testid="riders-table">
        <thead>
          <tr>
            <th>{t("bs.riders.id")}</th>
            <th>{t("bs.riders.name")}</th>
            <th>{t("bs.riders.phone")}</th>
            <th>{t("bs.riders.status")}</th>
            <th>{t("bs.riders.since")}</th>
            <th class="num">{t("bs.riders.balance")}</th>
          </tr>
        </thead>
        <tbody>
          {rows?.map(({ rider, balance }) => (
            <tr key={rider.id} class="clickable" onClick={() => navigate(`${BS}riders/${encodeURIComponent(rider.id)}`)}>
              <td class="mono small">
                <Link href={`${BS}riders/${encodeURIComponent(rider.id)}`}>{rider.id}</Link>
              </td>
              <td>{rider.display_name ?? "—"}</td>
              <td>{rider.phone ?? "—"}</td>
              <td>{t(`bs.riderStatus.${rider.status}` as MsgKey) ?? rider.status}</td>
              <td class="small">{fmtTime(rider.created_at)}</td>
              <td class={`num ${balance < 0 ? "error" : ""}`}>{fmtMoney(balance)}</td>
            </tr>
          ))}
          {rows && rows.length === 0 && (
            <tr>
              <td colSpan={6} class="muted">
                {t("bs.riders.empty")}
              </td>
            </tr>
          )}
        </tbody>
      </table>
      <div class="pager">
        <button disabled={afters.length <= 1} onClick={() => setAfters(afters.slice(0, -1))}>
          {t("devices.prev")}
        </button>
        <span>{t("devices.page", { page: afters.length })}</span>
        <button disabled={!last} onClick={() => last && setAfters([...afters, last])}>
          {t("devices.next")}
        </button>
      </div>
    </section>
  );
}

interface RiderDetail {
  rider: Rider;
  balance: number;
  statement: StatementLine[];
  passes: { journal_id: number; product: { id: string; name?: string }; valid_from: number; valid_until: number; cancelled_at: number | null }[];
}

export function RiderPage({ id }: { id: string }) {
  const [detail, setDetail] = useState<RiderDetail | null>(null);
  const [trips, setTrips] = useState<Trip[] | null>(null);
  const [error, setError] = useState<string | null>(null);

  const load = async () => {
    try {
      const [d, tr] = await Promise.all([
        api<RiderDetail>(`/api/v1/bikeshare/riders/${encodeURIComponent(id)}`),
        api<{ trips: Trip[] }>(`/api/v1/bikeshare/trips${qs({ rider: id, limit: 100 })}`),
      ]);
      setDetail(d);
      setTrips(tr.trips);
      setError(null);
    } catch (e) {
      setError(errorText(e));
    }
  };
  useEffect(() => {
    load();
  }, [id]);

  if (error && !detail) return <p class="error" role="alert">{t("common.error", { detail: error })}</p>;
  if (!detail) return <p class="muted">{t("common.loading")}</p>;
  const r = detail.rider;
  const refundable = (trips ?? []).filter((tr) => tr.state === "settled" && (tr.total ?? 0) > 0);
  return (
    <section>
      <div class="toolbar">
        <Link href={`${BS}riders`}>← {t("bs.riders.title")}</Link>
        <h1 data-testid="rider-title">{r.display_name ?? r.id}</h1>
        <span class="mono small muted">{r.id}</span>
      </div>
      <div class="cards">
        <div class="card">
          <p class="bs-balance">
            {t("bs.riders.balance")}:{" "}
            <b data-testid="rider-balance" class={detail.balance < 0 ? "error" : ""}>
              {fmtMoney(detail.balance)}
            </b>
          </p>
          <dl class="facts">
            <dt>{t("bs.riders.phone")}</dt>
            <dd>{r.phone ?? "—"}</dd>
            <dt>{t("bs.riders.realName")}</dt>
            <dd>{r.real_name ?? <span class="muted">{t("bs.riders.hidden")}</span>}</dd>
            <dt>{t("bs.riders.idLast4")}</dt>
            <dd>{r.id_number_last4 ?? <span class="muted">{t("bs.riders.hidden")}</span>}</dd>
            <dt>{t("bs.riders.status")}</dt>
            <dd>{t(`bs.riderStatus.${r.status}` as MsgKey) ?? r.status}</dd>
            <dt>{t("bs.riders.consent")}</dt>
            <dd>{r.location_consent ? t("common.yes") : t("common.no")}</dd>
            <dt>{t("bs.riders.since")}</dt>
            <dd>{fmtTime(r.created_at)}</dd>
          </dl>
          {detail.passes.length > 0 && (
            <>
              <h3>{t("bs.riders.passes")}</h3>
              <ul>
                {detail.passes.map((p) => (
                  <li>
                    {p.product.name ?? p.product.id}: {fmtTime(p.valid_from)} – {fmtTime(p.valid_until)}
                    {p.cancelled_at && <span class="chip">{t("bs.riders.cancelled")}</span>}
                  </li>
                ))}
              </ul>
            </>
          )}
        </div>
        {canWrite() && <RefundForm rider={id} trips={refundable} statement={detail.statement} onDone={load} />}
      </div>
      <div class="card">
        <h2>{t("bs.riders.trips")}</h2>
        <TripTable trips={trips} hideRider />
      </div>
      <div class="card">
        <h2>{t("bs.riders.statement")}</h2>
        <Statement lines={[...detail.statement].reverse()} testid="rider-statement" />
      </div>
    </section>
  );
}

function RefundForm({
  rider,
  trips,
  statement,
  onDone,
}: {
  rider: string;
  trips: Trip[];
  statement: StatementLine[];
  onDone: () => Promise<void>;
}) {
  // What was charged and is not refunded yet, per trip: the default and the ceiling shown.
  const left = (trip: Trip) =>
    (trip.total ?? 0) + statement.filter((l) => l.kind === "refund" && l.reference === trip.id).reduce((s, l) => s - l.amount, 0);
  const [trip, setTrip] = useState(trips[0]?.id ?? "");
  const [amount, setAmount] = useState("");
  const [reason, setReason] = useState("");
  // One key per intended refund: a double click or a retry after a timeout books it once.
  const [key, setKey] = useState(newIdempotencyKey);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const selected = trips.find((x) => x.id === trip);

  const submit = async (e: Event) => {
    e.preventDefault();
    const fen = Math.round(Number(amount) * 100);
    if (!Number.isFinite(fen) || fen <= 0) {
      setError(t("bs.riders.badAmount"));
      return;
    }
    setBusy(true);
    try {
      const r = await api<{ balance: number }>(`/api/v1/bikeshare/riders/${encodeURIComponent(rider)}/refunds`, {
        method: "POST",
        body: { amount: fen, reason: reason.trim(), trip_id: trip, idempotency_key: key },
      });
      setDone(t("bs.riders.refunded", { amount: fmtMoney(fen), balance: fmtMoney(r.balance) }));
      setError(null);
      setAmount("");
      setReason("");
      setKey(newIdempotencyKey());
      await onDone();
    } catch (err) {
      setError(errorText(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <form class="card stack" onSubmit={submit} data-testid="refund-form">
      <h2>{t("bs.riders.refund")}</h2>
      {trips.length === 0 ? (
        <p class="muted">{t("bs.riders.nothingToRefund")}</p>
      ) : (
        <>
          <label>
            {t("bs.riders.refundTrip")}
            <select value={trip} onChange={(e) => setTrip(e.currentTarget.value)} data-testid="refund-trip">
              {trips.map((x) => (
                <option value={x.id}>
                  {fmtTime(x.requested_at)} · {x.bike} · {fmtMoney(x.total ?? 0)}
                </option>
              ))}
            </select>
          </label>
          <label>
            {t("bs.riders.refundAmount")}
            <input
              required
              inputMode="decimal"
              pattern="[0-9]+([.][0-9]{1,2})?"
              value={amount}
              placeholder={selected ? (left(selected) / 100).toFixed(2) : ""}
              onInput={(e) => setAmount(e.currentTarget.value)}
              data-testid="refund-amount"
            />
          </label>
          <label>
            {t("bs.riders.refundReason")}
            <input required maxLength={500} value={reason} onInput={(e) => setReason(e.currentTarget.value)} data-testid="refund-reason" />
          </label>
          {error && <p class="error" role="alert">{error}</p>}
          {done && (
            <p class="ok" data-testid="refund-done">
              {done}
            </p>
          )}
          <div class="row">
            <button class="primary" type="submit" disabled={busy} data-testid="refund-submit">
              {t("bs.riders.refundSubmit")}
            </button>
          </div>
        </>
      )}
    </form>
  );
}
