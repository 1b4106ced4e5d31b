// Work orders for the field team: filter by kind, state, bike and assignee, open one for a bike
// (optionally assigned to a crew or a person), reassign it, and move it through the transitions
// the API allows (open → in progress → done, or cancelled).
import { useEffect, useState } from "preact/hooks";
import { errorText, qs } from "../../common/api";
import { fmtTime, t, type MsgKey } from "../../common/i18n";
import { Link } from "../../common/router";
import { api } from "../auth";
import { ORDER_KINDS, ORDER_STATES, canWrite, type WorkOrder } from "./common";

/** The states an order may go to next (as the API's state machine allows). */
export function nextStates(state: string): string[] {
  if (state === "open") return ["in_progress", "done", "cancelled"];
  if (state === "in_progress") return ["done", "cancelled"];
  return [];
}

export function WorkOrderList() {
  const params = new URLSearchParams(location.search);
  const [kind, setKind] = useState(params.get("kind") ?? "");
  const [state, setState] = useState(params.get("state") ?? "");
  const [bike, setBike] = useState(params.get("bike") ?? "");
  const [bikeQuery, setBikeQuery] = useState(bike);
  const [assignee, setAssignee] = useState(params.get("assignee") ?? "");
  const [assigneeQuery, setAssigneeQuery] = useState(assignee);
  const [orders, setOrders] = useState<WorkOrder[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [reload, setReload] = useState(0);
  const write = canWrite();

  useEffect(() => {
    const h = setTimeout(() => setBikeQuery(bike.trim()), 250);
    return () => clearTimeout(h);
  }, [bike]);

  useEffect(() => {
    const h = setTimeout(() => setAssigneeQuery(assignee.trim()), 250);
    return () => clearTimeout(h);
  }, [assignee]);

  useEffect(() => {
    const ctl = new AbortController();
    const filter = { kind, state, bike: bikeQuery, assignee: assigneeQuery };
    history.replaceState(null, "", location.pathname + qs(filter));
    api<{ work_orders: WorkOrder[] }>(`/api/v1/bikeshare/work-orders${qs({ ...filter, limit: 200 })}`, {
      signal: ctl.signal,
    })
      .then((r) => {
        setOrders(r.work_orders);
        setError(null);
      })
      .catch((e) => {
        if (e.name !== "AbortError") setError(errorText(e));
      });
    return () => ctl.abort();
  }, [kind, state, bikeQuery, assigneeQuery, reload]);

  return (
    <section>
      <div class="toolbar">
        <h1>{t("bs.orders.title")}</h1>
        <select aria-label={t("bs.orders.kind")} value={kind} onChange={(e) => setKind(e.currentTarget.value)} data-testid="orders-kind">
          <option value="">{t("bs.orders.allKinds")}</option>
          {ORDER_KINDS.map((k) => (
            <option value={k}>{t(`bs.orderKind.${k}`)}</option>
          ))}
        </select>
        <select aria-label={t("bs.orders.state")} value={state} onChange={(e) => setState(e.currentTarget.value)} data-testid="orders-state">
          <option value="">{t("bs.orders.allStates")}</option>
          {ORDER_STATES.map((s) => (
            <option value={s}>{t(`bs.orderState.${s}`)}</option>
          ))}
        </select>
        <input type="search" placeholder={t("bs.orders.bike")} value={bike} onInput={(e) => setBike(e.currentTarget.value)} data-testid="orders-bike" />
        <input
          type="search"
          aria-label={t("bs.orders.assigneeFilter")}
          placeholder={t("bs.orders.assigneeFilter")}
          value={assignee}
          onInput={(e) => setAssignee(e.currentTarget.value)}
          data-testid="orders-assignee"
        />
      </div>
      {write && <NewOrder onDone={() => setReload(reload + 1)} />}
      {error && <p class="error" role="alert">{t("common.error", { detail: error })}</p>}
      <table class="grid" data-testid="orders-table">
        <thead>
          <tr>
            <th>{t("bs.orders.created")}</th>
            <th>{t("bs.orders.kind")}</th>
            <th>{t("bs.orders.bike")}</th>
            <th>{t("bs.orders.reason")}</th>
            <th>{t("bs.orders.state")}</th>
            <th>{t("bs.orders.assignee")}</th>
            <th>{t("bs.orders.createdBy")}</th>
            {write && <th />}
          </tr>
        </thead>
        <tbody>
          {orders?.map((o) => (
            <OrderRow key={o.id + o.updated_at} order={o} write={write} onChange={() => setReload(reload + 1)} />
          ))}
          {orders && orders.length === 0 && (
            <tr>
              <td colSpan={8} class="muted">
                {t("bs.orders.empty")}
              </td>
            </tr>
          )}
        </tbody>
      </table>
    </section>
  );
}

function OrderRow({ order: o, write, onChange }: { order: WorkOrder; write: boolean; onChange: () => void }) {
  const [note, setNote] = useState("");
  const [assignee, setAssignee] = useState(o.assignee ?? "");
  const [error, setError] = useState<string | null>(null);
  const assign = async (e: Event) => {
    e.preventDefault();
    try {
      // An empty assignee unassigns the order.
      await api(`/api/v1/bikeshare/work-orders/${encodeURIComponent(o.id)}`, {
        method: "PATCH",
        body: { assignee: assignee.trim() || null },
      });
      onChange();
    } catch (err) {
      setError(errorText(err));
    }
  };
  const go = async (state: string) => {
    try {
      await api(`/api/v1/bikeshare/work-orders/${encodeURIComponent(o.id)}`, {
        method: "PATCH",
        body: note.trim() ? { state, note: note.trim() } : { state },
      });
      onChange();
    } catch (e) {
      setError(errorText(e));
    }
  };
  const next = nextStates(o.state);
  return (
    <tr data-order={o.id} data-state={o.state}>
      <td class="small">{fmtTime(o.created_at)}</td>
      <td>{t(`bs.orderKind.${o.kind}` as MsgKey) ?? o.kind}</td>
      <td>
        <Link href={`/console/devices/${encodeURIComponent(o.bike)}`}>{o.bike}</Link>
      </td>
      <td class="small">
        {o.reason}
        {o.note && <div class="muted">{o.note}</div>}
      </td>
      <td>
        <span class={`badge order-${o.state}`}>{t(`bs.orderState.${o.state}` as MsgKey) ?? o.state}</span>
      </td>
      <td class="small" data-testid="order-assignee">
        {write && next.length > 0 ? (
          <form class="row" onSubmit={assign}>
            <input
              class="bs-assignee"
              aria-label={t("bs.orders.assignee")}
              placeholder={t("bs.orders.unassigned")}
              maxLength={100}
              value={assignee}
              onInput={(e) => setAssignee(e.currentTarget.value)}
              data-testid="order-assignee-input"
            />
            {assignee.trim() !== (o.assignee ?? "") && (
              <button type="submit" data-testid="order-assign">
                {t("bs.orders.assign")}
              </button>
            )}
          </form>
        ) : (
          (o.assignee ?? <span class="muted">{t("bs.orders.unassigned")}</span>)
        )}
      </td>
      <td class="small muted">{o.created_by}</td>
      {write && (
        <td>
          {next.length > 0 && (
            <div class="row wrap">
              <input class="bs-note" placeholder={t("bs.orders.note")} value={note} onInput={(e) => setNote(e.currentTarget.value)} />
              {next.map((s) => (
                <button class={s === "done" ? "primary" : s === "cancelled" ? "danger" : ""} data-testid={`order-${s}`} onClick={() => go(s)}>
                  {t(`bs.orderAction.${s}` as MsgKey)}
                </button>
              ))}
            </div>
          )}
          {error && <div class="error small" role="alert">{error}</div>}
        </td>
      )}
    </tr>
  );
}

function NewOrder({ onDone }: { onDone: () => void }) {
  const [open, setOpen] = useState(false);
  const [bike, setBike] = useState("");
  const [kind, setKind] = useState("repair");
  const [reason, setReason] = useState("");
  const [assignee, setAssignee] = useState("");
  const [error, setError] = useState<string | null>(null);
  if (!open)
    return (
      <p>
        <button class="primary" onClick={() => setOpen(true)} data-testid="order-new">
          {t("bs.orders.new")}
        </button>
      </p>
    );
  const submit = async (e: Event) => {
    e.preventDefault();
    try {
      await createOrder(bike.trim(), kind, reason.trim(), assignee.trim() || undefined);
      setOpen(false);
      setBike("");
      setReason("");
      setAssignee("");
      setError(null);
      onDone();
    } catch (err) {
      setError(errorText(err));
    }
  };
  return (
    <form class="card row wrap bs-neworder" onSubmit={submit} data-testid="order-form">
      <label>
        {t("bs.orders.bike")}
        <input required value={bike} onInput={(e) => setBike(e.currentTarget.value)} data-testid="order-bike" />
      </label>
      <label>
        {t("bs.orders.kind")}
        <select value={kind} onChange={(e) => setKind(e.currentTarget.value)} data-testid="order-kind">
          {ORDER_KINDS.map((k) => (
            <option value={k}>{t(`bs.orderKind.${k}`)}</option>
          ))}
        </select>
      </label>
      <label class="grow">
        {t("bs.orders.reason")}
        <input required maxLength={500} value={reason} onInput={(e) => setReason(e.currentTarget.value)} data-testid="order-reason" />
      </label>
      <label>
        {t("bs.orders.assignee")}
        <input
          maxLength={100}
          placeholder={t("bs.orders.unassigned")}
          value={assignee}
          onInput={(e) => setAssignee(e.currentTarget.value)}
          data-testid="order-assignee-new"
        />
      </label>
      <button class="primary" type="submit" data-testid="order-create">
        {t("bs.orders.create")}
      </button>
      <button type="button" onClick={() => setOpen(false)}>
        {t("common.cancel")}
      </button>
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
    </form>
  );
}

export function createOrder(bike: string, kind: string, reason: string, assignee?: string): Promise<WorkOrder> {
  return api<WorkOrder>("/api/v1/bikeshare/work-orders", { method: "POST", body: { bike, kind, reason, assignee } });
}
