//! A connection's inbox: routed deliveries (bounded) and an out-of-band close request, in one
//! small allocation.
//!
//! Every connection needs both, even an idle device that never subscribes, so their resting
//! cost is paid once per connection: two tokio `mpsc` channels cost ~2.4 KiB each
//! connection (cache-padded channel state plus a preallocated block of 32 slots), this ~100
//! bytes, and the queue only takes memory while messages wait in it.
//!
//! One waker serves both kinds of message because a single task (the connection's) receives
//! them; a delivery only wakes it while it is waiting for deliveries, so a closed in-flight
//! window does not turn every routed message into a useless wake-up.
//!
//! The inbox also carries the connection's keep-alive deadline: the housekeeping sweep closes
//! connections past it ([`Postbox::keep_alive_expired`]), so a connection needs no timer of
//! its own (~100 bytes each, and a timer-wheel update per packet).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;
use tokio::sync::mpsc::error::TrySendError;
use wulian_mqtt::ReasonCode;

use crate::lane::{self, LaneIndex, Wakes};
use crate::router::Delivery;

/// A drained queue that grew past this many slots gives its memory back.
const KEEP_SLOTS: usize = 64;

struct State {
    queue: VecDeque<Delivery>,
    /// The first close request; later ones change nothing (the connection is closing).
    kick: Option<ReasonCode>,
    waker: Option<Waker>,
    /// The application lane the waker's task runs on, if it runs on one.
    waker_lane: Option<LaneIndex>,
    /// The receiver waits for deliveries (not only for a close request).
    wants_delivery: bool,
    /// The receiver is gone: deliveries are refused with `Closed`.
    closed: bool,
}

struct Inner {
    capacity: usize,
    /// The listener the connection came through (for shutting a listener's connections down).
    listener: u64,
    /// Keep-alive deadline in milliseconds on the broker's clock; 0 = none.
    keep_alive_deadline: AtomicU64,
    state: Mutex<State>,
}

/// The connection's receiving side. Dropping it closes the inbox.
pub(crate) struct Mailbox {
    inner: Arc<Inner>,
}

/// The sending side, held by the router (deliveries) and the session registry (close
/// requests). Cheap to clone.
#[derive(Clone)]
pub(crate) struct Postbox {
    inner: Arc<Inner>,
}

/// An inbox holding at most `capacity` deliveries (at least one).
#[cfg(test)]
pub(crate) fn mailbox(capacity: usize) -> (Postbox, Mailbox) {
    listener_mailbox(capacity, 0)
}

/// The inbox of a connection of `listener`, holding at most `capacity` deliveries (at least
/// one).
pub(crate) fn listener_mailbox(capacity: usize, listener: u64) -> (Postbox, Mailbox) {
    let inner = Arc::new(Inner {
        capacity: capacity.max(1),
        listener,
        keep_alive_deadline: AtomicU64::new(0),
        state: Mutex::new(State {
            queue: VecDeque::new(),
            kick: None,
            waker: None,
            waker_lane: None,
            wants_delivery: false,
            closed: false,
        }),
    });
    (
        Postbox {
            inner: Arc::clone(&inner),
        },
        Mailbox { inner },
    )
}

impl Postbox {
    /// Queues a delivery without waiting: `Full` when the queue is at capacity, `Closed` when
    /// the connection is gone (the delivery is handed back either way).
    #[cfg(test)]
    pub(crate) fn try_send(&self, delivery: Delivery) -> Result<(), TrySendError<Delivery>> {
        self.try_send_waking(delivery, &mut Wakes::default())
    }

    /// [`Postbox::try_send`], with the receiver's wake-up added to `wakes`.
    pub(crate) fn try_send_waking(
        &self,
        delivery: Delivery,
        wakes: &mut Wakes,
    ) -> Result<(), TrySendError<Delivery>> {
        let waker = {
            let mut st = self.inner.state.lock();
            if st.closed {
                return Err(TrySendError::Closed(delivery));
            }
            if st.queue.len() >= self.inner.capacity {
                return Err(TrySendError::Full(delivery));
            }
            st.queue.push_back(delivery);
            if st.wants_delivery {
                st.wants_delivery = false;
                st.waker.clone().map(|waker| (st.waker_lane, waker))
            } else {
                None
            }
        };
        // Woken outside the lock: the woken task may run on another thread at once.
        if let Some((lane, waker)) = waker {
            wakes.add(lane, waker);
        }
        Ok(())
    }

    /// Asks the connection to close with `code`. Returns false when it is already closing
    /// (closed, or asked before).
    pub(crate) fn kick(&self, code: ReasonCode) -> bool {
        let waker = {
            let mut st = self.inner.state.lock();
            if st.closed || st.kick.is_some() {
                return false;
            }
            st.kick = Some(code);
            st.waker.clone()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// The connection is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.inner.state.lock().closed
    }

    /// The listener the connection came through.
    pub(crate) fn listener(&self) -> u64 {
        self.inner.listener
    }

    /// Whether the connection's keep-alive deadline passed by `now_ms` (the broker's clock).
    pub(crate) fn keep_alive_expired(&self, now_ms: u64) -> bool {
        let deadline = self.inner.keep_alive_deadline.load(Ordering::Relaxed);
        deadline != 0 && now_ms > deadline
    }
}

impl Mailbox {
    /// Sets the keep-alive deadline (milliseconds on the broker's clock; 0 = none).
    pub(crate) fn set_keep_alive_deadline(&self, deadline_ms: u64) {
        self.inner
            .keep_alive_deadline
            .store(deadline_ms, Ordering::Relaxed);
    }

    /// The next delivery, once one is queued. Cancel safe.
    #[cfg(test)]
    pub(crate) async fn recv(&self) -> Delivery {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Delivery> {
        let mut st = self.inner.state.lock();
        match st.queue.pop_front() {
            Some(d) => {
                st.wants_delivery = false;
                lane::note_backlog(st.queue.len());
                Poll::Ready(d)
            }
            None => {
                shrink_idle(&mut st.queue);
                st.wants_delivery = true;
                register(&mut st, cx.waker());
                Poll::Pending
            }
        }
    }

    /// A sending side for this inbox.
    pub(crate) fn postbox(&self) -> Postbox {
        Postbox {
            inner: Arc::clone(&self.inner),
        }
    }

    /// Whether no delivery is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.inner.state.lock().queue.is_empty()
    }

    /// A delivery if one is queued.
    pub(crate) fn try_recv(&mut self) -> Option<Delivery> {
        let mut st = self.inner.state.lock();
        let d = st.queue.pop_front();
        match d {
            Some(_) => lane::note_backlog(st.queue.len()),
            None => shrink_idle(&mut st.queue),
        }
        d
    }

    /// The close request, once there is one. Cancel safe.
    #[cfg(test)]
    pub(crate) async fn kicked(&self) -> ReasonCode {
        std::future::poll_fn(|cx| self.poll_kicked(cx)).await
    }

    /// [`Mailbox::kicked`] as a poll.
    pub(crate) fn poll_kicked(&self, cx: &mut Context<'_>) -> Poll<ReasonCode> {
        let mut st = self.inner.state.lock();
        // Left in place (not taken), so that later requests still see "closing".
        match st.kick {
            Some(code) => Poll::Ready(code),
            None => {
                register(&mut st, cx.waker());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
impl Mailbox {
    pub(crate) fn pending_kick(&self) -> Option<ReasonCode> {
        self.inner.state.lock().kick
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        let mut st = self.inner.state.lock();
        st.closed = true;
        st.waker = None;
        // Queued deliveries are dropped with the connection, as with a dropped channel.
        st.queue = VecDeque::new();
    }
}

fn register(st: &mut State, waker: &Waker) {
    match &st.waker {
        Some(current) if current.will_wake(waker) => {}
        _ => {
            st.waker = Some(waker.clone());
            st.waker_lane = lane::current();
        }
    }
}

fn shrink_idle(queue: &mut VecDeque<Delivery>) {
    if queue.capacity() > KEEP_SLOTS {
        *queue = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::router::RoutedMessage;

    fn delivery() -> Delivery {
        Delivery {
            msg: Arc::new(RoutedMessage::new(
                "t".into(),
                bytes::Bytes::new(),
                wulian_mqtt::QoS::AtMostOnce,
                false,
                &wulian_mqtt::Properties::default(),
                None,
            )),
            qos: wulian_mqtt::QoS::AtMostOnce,
            retain: false,
            sub_ids: Vec::new(),
        }
    }

    #[test]
    fn bounded_and_closed_with_the_receiver() {
        let (tx, mut rx) = mailbox(2);
        assert!(tx.try_send(delivery()).is_ok());
        assert!(tx.try_send(delivery()).is_ok());
        assert!(matches!(
            tx.try_send(delivery()),
            Err(TrySendError::Full(_))
        ));
        assert!(rx.try_recv().is_some());
        assert!(tx.try_send(delivery()).is_ok());
        assert!(!tx.is_closed());
        drop(rx);
        assert!(tx.is_closed());
        assert!(matches!(
            tx.try_send(delivery()),
            Err(TrySendError::Closed(_))
        ));
        assert!(!tx.kick(ReasonCode::SessionTakenOver));
    }

    #[test]
    fn the_first_close_request_wins() {
        let (tx, rx) = mailbox(1);
        assert!(tx.kick(ReasonCode::SessionTakenOver));
        assert!(!tx.kick(ReasonCode::AdministrativeAction));
        assert_eq!(rx.pending_kick(), Some(ReasonCode::SessionTakenOver));
    }

    #[test]
    fn keep_alive_deadline() {
        let (tx, rx) = listener_mailbox(1, 7);
        assert_eq!(tx.listener(), 7);
        assert!(
            !tx.keep_alive_expired(u64::MAX),
            "no deadline, never expires"
        );
        rx.set_keep_alive_deadline(1_500);
        assert!(!tx.keep_alive_expired(1_500));
        assert!(tx.keep_alive_expired(1_501));
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken() {
        let (tx, rx) = mailbox(4);
        let waiting = tokio::spawn(async move { rx.recv().await.qos });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(tx.try_send(delivery()).is_ok());
        let got = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(matches!(got, Ok(Ok(wulian_mqtt::QoS::AtMostOnce))));

        let (tx, rx) = mailbox(4);
        let waiting = tokio::spawn(async move { rx.kicked().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(tx.kick(ReasonCode::ServerShuttingDown));
        let got = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(matches!(got, Ok(Ok(ReasonCode::ServerShuttingDown))));
    }
}
