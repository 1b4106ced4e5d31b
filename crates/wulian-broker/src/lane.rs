//! The application lanes: threads and runtimes of their own for application connections.
//!
//! Applications (API-key clients: dashboards, rule engines, integrations) are few, and one of
//! them often subscribes to a whole fleet (`devices/+/telemetry`). On the shared workers its
//! connection task waits its turn behind every device task that has a packet to handle; with
//! a thousand publishing devices that turn comes late, its acknowledgements are read late, its
//! in-flight window stays closed and its queue overflows. On a thread of its own the kernel
//! schedules it as soon as its socket has data, whatever the devices are doing.
//!
//! When it may (root, or `CAP_SYS_NICE`), a lane whose connections fall behind also raises its
//! thread's scheduling priority ([`LANE_NICE`]): on a machine the devices keep busy, a thread
//! of normal priority still waits for the cores in turn with the device workers, and a
//! fleet-wide subscriber's queue overflows while it waits. A lane that keeps up stays at normal
//! priority ([`PriorityTuner`]): there a raised priority gains nothing and costs the rest of
//! the machine a preemption at every packet, which in a fan-out to a thousand subscribers on
//! the same machine delayed every delivery's reader by milliseconds.
//!
//! Only a plain TCP socket can move from one runtime's reactor to another's. A TLS or
//! WebSocket stream keeps state that its crate cannot rebuild around a moved socket, so an
//! application connection of that kind moves only when its listener is marked for the lane
//! (`ListenerConfig::application_lane`): then the raw socket moves as it is accepted, before
//! any handshake, and the whole connection runs here.
//!
//! There are a few lanes ([`Lanes`]), one per core by default: a thousand application
//! subscribers of one topic (a fan-out) are then served on every core, not one. A new
//! connection goes to the lane with the fewest; lanes start as they are first needed.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Waker;

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A busy lane thread's nice value when the process may lower it (0 is normal, -20 the
/// highest).
pub(crate) const LANE_NICE: i32 = -5;

/// How often a lane looks at its connections' backlog.
const PRIORITY_PERIOD: std::time::Duration = std::time::Duration::from_millis(100);
/// A connection of the lane left this many deliveries waiting (a full in-flight window's
/// worth) in a period: the lane raises its priority.
const BACKLOG_RAISE: usize = 64;
/// Periods in a row with every backlog under [`BACKLOG_CALM`] before the priority goes back
/// to normal: a backlog that the raise itself cleared must stay cleared for a while, or the
/// priority would flap every period.
const CALM_PERIODS: u32 = 20;
const BACKLOG_CALM: usize = 8;

thread_local! {
    /// The largest backlog a connection task on this thread left since the lane last looked.
    static BACKLOG: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// The lane's index, on lane threads: a connection already there does not move again, and
    /// a task waiting there is woken through [`Wakes`].
    static ON_LANE: std::cell::Cell<Option<LaneIndex>> = const { std::cell::Cell::new(None) };
}

/// A lane's number among its broker's lanes.
pub(crate) type LaneIndex = u16;

/// Whether the caller runs on an application lane's thread (a broker's connections only ever
/// run on that broker's lane).
pub(crate) fn on_lane() -> bool {
    current().is_some()
}

/// The lane the caller runs on, if it runs on one.
pub(crate) fn current() -> Option<LaneIndex> {
    ON_LANE.with(std::cell::Cell::get)
}

/// Notes that a connection task on the calling thread took a delivery and left `queued` more
/// waiting (read by the lane's [`PriorityTuner`]; elsewhere nobody reads it).
pub(crate) fn note_backlog(queued: usize) {
    BACKLOG.with(|most| {
        if queued > most.get() {
            most.set(queued);
        }
    });
}

/// The wake-ups due after routing one message, held until the routing is done so that many
/// tasks waiting on one lane cost one hand-off to its thread, not one each.
///
/// Waking a task of another runtime from outside it writes to that runtime's eventfd: for a
/// message to a thousand subscribers on a lane, a thousand system calls on the routing thread,
/// and the lane thread woken, sent back to sleep and woken again as the deliveries trickle in.
/// A held group is instead woken from a task on the lane itself, where a wake-up is a push on
/// its run queue. Tasks that do not wait on a lane are woken at once; dropping `Wakes` wakes
/// whatever it still holds, so no wake-up is ever lost.
#[derive(Default)]
pub(crate) struct Wakes {
    held: Vec<(LaneIndex, Waker)>,
}

impl Wakes {
    /// Wakes `waker` now, or holds it when its task waits on `lane`.
    pub(crate) fn add(&mut self, lane: Option<LaneIndex>, waker: Waker) {
        match lane {
            Some(lane) => self.held.push((lane, waker)),
            None => waker.wake(),
        }
    }
}

impl Drop for Wakes {
    fn drop(&mut self) {
        for (_, waker) in self.held.drain(..) {
            waker.wake();
        }
    }
}

/// The application lanes of a broker, each started on first use.
pub(crate) struct Lanes {
    slots: Box<[OnceLock<Option<Lane>>]>,
}

impl Lanes {
    /// Room for `threads` lanes (0: one per core, at most four); none is started yet.
    pub(crate) fn new(threads: usize) -> Lanes {
        // Applications are few, but a fan-out's deliveries are many: one lane per core.
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
            n => n,
        };
        Lanes {
            slots: (0..threads).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The lane for a new connection: an idle lane if one is started, else a lane not yet
    /// started (started now), else the started lane with the fewest connections. `None` when
    /// no lane could start (connections then stay where they are).
    pub(crate) fn pick(&self) -> Option<&Lane> {
        let mut best: Option<&Lane> = None;
        for (index, slot) in self.slots.iter().enumerate() {
            let lane = match slot.get() {
                Some(started) => started.as_ref(),
                None if best.is_some_and(|b| b.connections() == 0) => break,
                None => slot
                    .get_or_init(|| match Lane::start(index) {
                        Ok(lane) => Some(lane),
                        Err(e) => {
                            tracing::warn!(error = %e, lane = index, "could not start an application lane");
                            None
                        }
                    })
                    .as_ref(),
            };
            if let Some(lane) = lane
                && best.is_none_or(|b| lane.connections() < b.connections())
            {
                best = Some(lane);
            }
        }
        best
    }

    /// Wakes what `wakes` holds: a lane's group from a task on that lane when it has more
    /// than one member, a single wake-up directly (a task spawned for it would cost more).
    pub(crate) fn wake(&self, mut wakes: Wakes) {
        if wakes.held.len() < 2 {
            return; // dropped: woken directly
        }
        for (index, slot) in self.slots.iter().enumerate() {
            let Some(Some(lane)) = slot.get() else {
                continue;
            };
            let group: Vec<Waker> = wakes
                .held
                .extract_if(.., |(held, _)| usize::from(*held) == index)
                .map(|(_, waker)| waker)
                .collect();
            match group.len() {
                0 => {}
                1 => group.into_iter().for_each(Waker::wake),
                _ => {
                    // If the lane has stopped, its tasks are gone and the wake-ups with them.
                    drop(lane.handle.spawn(async move {
                        group.into_iter().for_each(Waker::wake);
                    }));
                }
            }
        }
    }
}

/// One lane's runtime. Dropping it stops the thread; connections still on it end.
pub(crate) struct Lane {
    handle: Handle,
    /// Connections running here now.
    connections: Arc<AtomicUsize>,
    _stop: oneshot::Sender<()>,
}

/// Decrements a lane's connection count when its connection's task ends.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Lane {
    /// Starts lane number `index`: its thread with a single-threaded runtime.
    fn start(index: usize) -> io::Result<Lane> {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("mqtt-app-lane-{index}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        handle_tx.send(Err(e)).ok();
                        return;
                    }
                };
                let lane = LaneIndex::try_from(index).unwrap_or(LaneIndex::MAX);
                ON_LANE.with(|on| on.set(Some(lane)));
                handle_tx.send(Ok(runtime.handle().clone())).ok();
                // Runs the lane's tasks until the lane is dropped (the sender goes away).
                runtime.block_on(async {
                    let tuner = tokio::spawn(PriorityTuner::new().run());
                    stop_rx.await.ok();
                    tuner.abort();
                });
            })?;
        // Blocks the caller (a runtime worker, once per broker) while the thread builds its
        // runtime: well under a millisecond.
        let handle = handle_rx
            .recv()
            .map_err(|_| io::Error::other("the application lane's thread ended at start"))??;
        Ok(Lane {
            handle,
            connections: Arc::new(AtomicUsize::new(0)),
            _stop: stop_tx,
        })
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(crate) fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }

    /// Runs `serve` on the lane with `socket` (detached from the runtime that accepted it)
    /// registered with the lane's reactor, which only the lane's own context can do.
    pub(crate) fn adopt<F, Fut>(&self, socket: std::net::TcpStream, serve: F) -> JoinHandle<()>
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.connections.fetch_add(1, Ordering::Relaxed);
        let counted = Counted(Arc::clone(&self.connections));
        self.handle.spawn(async move {
            let _counted = counted;
            match TcpStream::from_std(socket) {
                Ok(stream) => serve(stream).await,
                Err(e) => tracing::debug!(error = %e, "could not register the connection with the application lane"),
            }
        })
    }
}

/// Raises the lane thread's priority while its connections fall behind (a backlog of
/// [`BACKLOG_RAISE`] deliveries in a [`PRIORITY_PERIOD`]) and lowers it again once they have
/// kept up for [`CALM_PERIODS`]. Runs as a task on the lane, so "this thread" is the lane's.
struct PriorityTuner {
    raised: bool,
    calm: u32,
    /// The process may not raise priorities: nothing to tune.
    refused: bool,
}

impl PriorityTuner {
    fn new() -> PriorityTuner {
        PriorityTuner {
            raised: false,
            calm: 0,
            refused: false,
        }
    }

    async fn run(mut self) {
        let mut ticks = tokio::time::interval(PRIORITY_PERIOD);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.refused {
            ticks.tick().await;
            self.observe(BACKLOG.with(|most| most.replace(0)));
        }
    }

    /// Moves the priority after a period whose largest backlog was `backlog`.
    fn observe(&mut self, backlog: usize) {
        self.calm = if backlog < BACKLOG_CALM {
            self.calm + 1
        } else {
            0
        };
        let nice = match self.raised {
            false if backlog >= BACKLOG_RAISE => LANE_NICE,
            true if self.calm >= CALM_PERIODS => 0,
            _ => return,
        };
        let thread = rustix::thread::gettid();
        match rustix::process::setpriority_process(Some(thread), nice) {
            Ok(()) => {
                self.raised = nice != 0;
                tracing::debug!(nice, backlog, "application lane priority changed");
            }
            // Unprivileged: the lane still has its own thread, at normal priority.
            Err(e) => {
                self.refused = true;
                tracing::debug!(error = %e, "application lane keeps normal priority");
            }
        }
    }
}

/// A connection's stream that may move to the application lane.
pub(crate) trait Detach: Sized {
    /// The plain TCP socket, detached from the current runtime's reactor (the inner result
    /// fails if the reactor refuses to let it go: the socket is then closed), or the stream
    /// itself when it cannot move.
    fn detach(self) -> Result<io::Result<std::net::TcpStream>, Self> {
        Err(self)
    }
}

impl Detach for TcpStream {
    fn detach(self) -> Result<io::Result<std::net::TcpStream>, Self> {
        Ok(self.into_std())
    }
}

impl<S> Detach for tokio_rustls::server::TlsStream<S> {}

impl<S> Detach for crate::ws::WsIo<S> {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A waker that records the name of the thread that woke it.
    struct Recorded(std::sync::Mutex<Vec<Option<String>>>);

    impl std::task::Wake for Recorded {
        fn wake(self: Arc<Self>) {
            let name = std::thread::current().name().map(str::to_owned);
            self.0.lock().unwrap().push(name);
        }
    }

    #[tokio::test]
    async fn a_lanes_held_wake_ups_are_made_on_the_lane_and_none_is_lost() {
        let lanes = Lanes::new(1);
        let (socket, _client) = socket_pair().await;
        lanes.pick().unwrap().adopt(socket, |_stream| async {});
        let recorded = Arc::new(Recorded(std::sync::Mutex::new(Vec::new())));
        let mut wakes = Wakes::default();
        for _ in 0..3 {
            wakes.add(Some(0), Waker::from(Arc::clone(&recorded)));
        }
        wakes.add(None, Waker::from(Arc::clone(&recorded)));
        assert_eq!(
            recorded.0.lock().unwrap().len(),
            1,
            "not on a lane: woken at once"
        );
        lanes.wake(wakes);
        for _ in 0..100 {
            if recorded.0.lock().unwrap().len() == 4 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let names = recorded.0.lock().unwrap().clone();
        assert_eq!(names.len(), 4);
        assert!(
            names[1..]
                .iter()
                .all(|n| n.as_deref() == Some("mqtt-app-lane-0"))
        );
        // Dropped unsent (no lanes to hand them to): woken where they are.
        let mut wakes = Wakes::default();
        wakes.add(Some(1), Waker::from(Arc::clone(&recorded)));
        drop(wakes);
        assert_eq!(recorded.0.lock().unwrap().len(), 5);
    }

    #[test]
    fn a_lane_that_falls_behind_raises_its_priority_until_it_keeps_up_again() {
        // On a thread of its own: the test changes its thread's priority.
        std::thread::spawn(|| {
            let me = Some(rustix::thread::gettid());
            let nice = || rustix::process::getpriority_process(me).unwrap();
            let base = nice();
            let mut tuner = PriorityTuner::new();
            tuner.observe(BACKLOG_RAISE - 1);
            assert_eq!(nice(), base, "a backlog under a window changes nothing");
            tuner.observe(BACKLOG_RAISE);
            if tuner.refused {
                return; // unprivileged: the lane stays at normal priority
            }
            assert_eq!(nice(), LANE_NICE);
            for _ in 1..CALM_PERIODS {
                tuner.observe(0);
            }
            tuner.observe(BACKLOG_CALM);
            assert_eq!(nice(), LANE_NICE, "the calm has to last");
            for _ in 1..CALM_PERIODS {
                tuner.observe(BACKLOG_CALM - 1);
            }
            assert_eq!(nice(), LANE_NICE);
            tuner.observe(0);
            assert_eq!(nice(), 0);
        })
        .join()
        .unwrap();
    }

    #[tokio::test]
    async fn runs_tasks_on_its_own_thread_and_ends_them_when_dropped() {
        let lane = Lane::start(3).unwrap();
        let name = lane
            .spawn(async { std::thread::current().name().map(str::to_owned) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("mqtt-app-lane-3"));
        let forever = lane.spawn(std::future::pending::<()>());
        drop(lane);
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), forever)
            .await
            .expect("the lane's tasks end with it");
        assert!(ended.unwrap_err().is_cancelled());
    }

    /// A connected pair: the server side as a std socket, ready to be adopted.
    async fn socket_pair() -> (std::net::TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server.into_std().unwrap(), client)
    }

    #[tokio::test]
    async fn connections_spread_over_the_lanes_and_free_their_place_when_they_end() {
        let lanes = Lanes::new(2);
        let lane_name = || async { std::thread::current().name().map(str::to_owned) };
        let mut clients = Vec::new();
        let mut names = Vec::new();
        let mut ends = Vec::new();
        for _ in 0..4 {
            let (socket, client) = socket_pair().await;
            let (end_tx, end_rx) = oneshot::channel::<()>();
            let (name_tx, name_rx) = oneshot::channel();
            let lane = lanes.pick().unwrap();
            lane.adopt(socket, move |_stream| async move {
                name_tx.send(lane_name().await).ok();
                end_rx.await.ok();
            });
            names.push(name_rx.await.unwrap().unwrap());
            clients.push(client);
            ends.push(end_tx);
        }
        assert_eq!(
            names,
            [
                "mqtt-app-lane-0",
                "mqtt-app-lane-1",
                "mqtt-app-lane-0",
                "mqtt-app-lane-1"
            ]
        );
        // Both connections of lane 0 end: the next one goes there.
        drop(ends.remove(2));
        drop(ends.remove(0));
        let lane0 = &lanes.slots[0].get().unwrap().as_ref().unwrap();
        for _ in 0..100 {
            if lane0.connections() == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let (socket, _client) = socket_pair().await;
        let (name_tx, name_rx) = oneshot::channel();
        lanes
            .pick()
            .unwrap()
            .adopt(socket, move |_stream| async move {
                name_tx.send(lane_name().await).ok();
            });
        assert_eq!(name_rx.await.unwrap().as_deref(), Some("mqtt-app-lane-0"));
    }
}
