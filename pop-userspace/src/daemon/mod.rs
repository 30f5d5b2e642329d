//! popd: the controller daemon. Wires the data plane, the
//! durable state, netlink, the API socket, metrics and signals together.
pub mod acl_book;
pub mod addr4;
pub mod addr6;
pub mod check;
pub mod compile;
pub mod controller;
pub mod customers;
pub mod desired;
pub mod error;
pub mod icmp;
pub mod kernel_routes;
pub mod learned;
pub mod plane_diff;
pub mod route_sync;
pub mod trace;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use futures::StreamExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

use crate::config::validate;
use crate::dataplane::Dataplane;
use crate::netlink::KernelView;
use crate::state::{Ids, Persisted, Store};
use check::{Current, Devices};
use controller::Controller;
use desired::Change;
use error::ControlError;

/// popd — pop's controller: loads the XDP data plane, keeps it in the desired
/// state, serves popctl and Prometheus.
///
/// With `[kernel_routes] table = N` in the config, popd also forwards by the
/// routes of kernel routing table N, which a BGP daemon fills (bird2: `protocol
/// kernel { kernel table N; }`, FRR: `table N`): it dumps the table at start and
/// follows it over rtnetlink. A configured route for the same prefix wins.
#[derive(Debug, Parser)]
#[command(
    name = "popd",
    version,
    about = "pop's controller: loads the XDP data plane, keeps it in the desired state, \
             serves popctl and Prometheus"
)]
pub struct Args {
    /// The config file (TOML, as `popctl export` prints). Used on first start and on SIGHUP;
    /// afterwards the state in --state-dir (changes made with popctl) wins. It
    /// passes the checks every change passes (interfaces present, policer
    /// ranges, map capacities) or popd refuses it whole, leaving --state-dir
    /// and --bpffs as they were; it is persisted once applied.
    #[arg(long, default_value = "/etc/pop/pop.toml")]
    pub config: PathBuf,
    /// Where the desired state is kept (atomic writes, fsync).
    #[arg(long, default_value = "/var/lib/pop")]
    pub state_dir: PathBuf,
    /// bpffs directory for the program, maps and links.
    #[arg(long, default_value = "/sys/fs/bpf/pop")]
    pub bpffs: PathBuf,
    /// The API socket for popctl (mode 0660: root and --socket-group only).
    #[arg(long, default_value = "/run/pop/popd.sock")]
    pub socket: PathBuf,
    /// Give the API socket to this group, so its members may use popctl
    /// (the Debian package creates and uses `pop`). Default: popd's own group.
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Address for Prometheus: http://ADDR/metrics.
    #[arg(long, default_value = "127.0.0.1:9469")]
    pub metrics: SocketAddr,
    /// Log format.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    pub log_format: String,
    /// Remove the data plane (detach XDP, unpin) when popd exits. Without it, a
    /// stopped or crashed popd leaves forwarding running.
    #[arg(long)]
    pub detach_on_exit: bool,
    /// Receive buffer (bytes) of the socket that follows the [kernel_routes]
    /// table. Tests set a small one to force overflows (ENOBUFS) and re-syncs.
    #[arg(long, hide = true, default_value_t = kernel_routes::DEFAULT_RCVBUF)]
    pub kernel_routes_rcvbuf: usize,
    /// Export a hit counter per ACL rule (pop_acl_rule_hits_total, label
    /// `priority`). Off by default: one series per rule can be many; the
    /// totals per action (pop_acl_hits_total) are always there.
    #[arg(long)]
    pub metrics_acl_rules: bool,
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("POP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

/// Runs popd; returns the process exit code.
pub fn main() -> i32 {
    let args = Args::parse();
    init_logging(&args.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("popd: starting the runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => 0,
        Err(e) => {
            // Once: the log is stderr.
            tracing::error!("{e}");
            1
        }
    }
}

/// The first config (`--config`), checked like every change.
fn first_state(config: &Path, kernel: &KernelView) -> Result<Persisted, ControlError> {
    let file_error = |reason: String| ControlError::ConfigFile {
        path: config.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(config).map_err(|e| file_error(e.to_string()))?;
    let (cfg, routes) =
        validate::parse_config_routes(&text).map_err(|e| file_error(e.to_string()))?;
    drop(text);
    let empty = crate::config::model::Config::default();
    let plan = check::plan(
        &cfg,
        check::Routes::Parsed(Box::new(routes)),
        kernel,
        &Current {
            config: &empty,
            ids: &Ids::default(),
            generation: 0,
            acl_copy: 0,
            acl_ifindexes: None,
        },
        Devices::Required,
    )
    .map_err(|e| file_error(e.to_string()))?;
    let (config, _) = cfg.with_routes(Vec::new());
    Ok(Persisted {
        generation: 1,
        config,
        ids: plan.ids,
        routes: plan.routes.unwrap_or_default(),
    })
}

/// The desired state to start from: the persisted one when there is one (it
/// wins over `--config`), else the config file. Returns it and whether it is
/// the first (not yet persisted). Both are checked before anything is loaded.
fn initial_state(
    store: &Store,
    config: &Path,
    kernel: &KernelView,
) -> Result<(Persisted, bool), ControlError> {
    let Some((mut state, changes)) = store.load_with_journal::<Change>()? else {
        return Ok((first_state(config, kernel)?, true));
    };
    // The changes acknowledged after the snapshot, in order.
    let replayed = changes.len();
    for change in changes {
        let generation = state.generation + 1;
        desired::replay(&mut state, generation, &change).map_err(|e| ControlError::StateFile {
            path: store.journal_path(),
            reason: format!("change of generation {generation} ({change:?}): {e}"),
        })?;
    }
    if replayed > 0 {
        tracing::info!(
            changes = replayed,
            generation = state.generation,
            "replayed the state journal"
        );
    }
    let checked = check::plan(
        &state.config,
        check::Routes::Current(&state.routes),
        kernel,
        &Current {
            config: &Default::default(),
            ids: &state.ids,
            generation: state.generation,
            acl_copy: 0,
            acl_ifindexes: None,
        },
        Devices::Tolerated,
    );
    match checked {
        Ok(_) => Ok((state, false)),
        // Generation 1 is a first config never changed since; one that fails
        // the checks was never applied either (a popd before these checks
        // saved it before applying it). The config file replaces it.
        Err(e) if state.generation == 1 => {
            tracing::warn!(
                "state {}: {e}; it was never applied: starting from {} instead",
                store.path().display(),
                config.display()
            );
            Ok((first_state(config, kernel)?, true))
        }
        Err(e) => Err(ControlError::StateFile {
            path: store.path(),
            reason: e.to_string(),
        }),
    }
}

async fn run(args: Args) -> Result<(), ControlError> {
    // A bad group is refused before anything is loaded or attached.
    let socket_gid = args
        .socket_group
        .as_deref()
        .map(crate::api::server::group_id)
        .transpose()?;
    let store = Store::open(&args.state_dir)?;
    let handle = crate::netlink::connect()?;
    let view = crate::netlink::dump(&handle).await?;
    // Everything is checked before anything is loaded, bound or persisted.
    let (state, first) = initial_state(&store, &args.config, &view)?;
    // Bound before the data plane is touched: a second popd on the same
    // socket stops here.
    let listener =
        crate::api::server::bind_for_group(&args.socket, socket_gid).map_err(|source| {
            ControlError::Io {
                what: format!("socket {}", args.socket.display()),
                source,
            }
        })?;
    let metrics = match tokio::net::TcpListener::bind(args.metrics).await {
        Ok(m) => m,
        Err(source) => {
            let _ = std::fs::remove_file(&args.socket);
            return Err(ControlError::Io {
                what: format!("metrics {}", args.metrics),
                source,
            });
        }
    };
    // Subscribed before the kernel route table is dumped, so that no route
    // change is missed.
    let follower = match kernel_routes::Follower::open(args.kernel_routes_rcvbuf) {
        Ok(f) => f,
        Err(source) => {
            let _ = std::fs::remove_file(&args.socket);
            return Err(ControlError::Io {
                what: "netlink route socket".to_string(),
                source,
            });
        }
    };
    let started = start_controller(&args, store, state, first, view);
    let ctl = match started {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&args.socket);
            return Err(e);
        }
    };
    let published = ctl.published();
    let ctl = Arc::new(Mutex::new(ctl));
    let changed = Arc::new(Notify::new());
    let stop = Arc::new(Notify::new());
    let detach = Arc::new(Mutex::new(args.detach_on_exit));
    tokio::spawn(crate::api::server::serve(
        listener,
        ctl.clone(),
        changed.clone(),
        stop.clone(),
        detach.clone(),
    ));

    tokio::spawn(serve_metrics(metrics, published, args.metrics_acl_rules));

    tokio::spawn(follow_kernel(handle, ctl.clone(), changed.clone()));
    {
        let (ctl, changed) = (ctl.clone(), changed.clone());
        std::thread::Builder::new()
            .name("kernel-routes".into())
            .spawn(move || follower.run(ctl, changed))
            .map_err(|source| ControlError::Io {
                what: "starting the kernel route follower".to_string(),
                source,
            })?;
    }

    let signal = |kind| {
        signal(kind).map_err(|source| ControlError::Io {
            what: "signal handler".to_string(),
            source,
        })
    };
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tracing::info!(socket = %args.socket.display(), metrics = %args.metrics, "popd ready");
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let text = std::fs::read_to_string(&args.config);
                let c = ctl.clone();
                let res = tokio::task::spawn_blocking(move || match text {
                    Ok(t) => c
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .apply_config(t, false)
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }).await.unwrap_or_else(|e| Err(e.to_string()));
                match res {
                    Ok(v) => tracing::info!(result = %v, "SIGHUP: applied {}", args.config.display()),
                    Err(e) => tracing::error!("SIGHUP: {}: {e}; nothing changed", args.config.display()),
                }
                changed.notify_one();
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = stop.notified() => break,
        }
    }
    let _ = std::fs::remove_file(&args.socket);
    if *detach.lock().unwrap_or_else(|p| p.into_inner()) {
        let mut c = ctl.lock().unwrap_or_else(|p| p.into_inner());
        c.remove_dataplane()?;
        tracing::info!("data plane removed");
    } else {
        tracing::info!("exiting; the data plane keeps forwarding");
    }
    Ok(())
}

/// Serves `/metrics` from what the controller published and the counter
/// maps: a scrape never takes the controller's lock, so it answers while a
/// change is being written.
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    published: crate::metrics::Published,
    acl_rule_metrics: bool,
) {
    use std::sync::atomic::Ordering;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let published = published.clone();
            async move {
                let body = tokio::task::spawn_blocking(move || {
                    let follower = crate::metrics::Follower {
                        synced: kernel_routes::SYNCED.load(Ordering::Relaxed),
                        resyncs: kernel_routes::RESYNCS.load(Ordering::Relaxed),
                    };
                    crate::metrics::render(&published.current(), follower, acl_rule_metrics)
                })
                .await
                .unwrap_or_default();
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    body,
                )
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("metrics server: {e}");
    }
}

/// Opens (adopts, loads or stages) the data plane under `--bpffs` and starts
/// the controller on it.
fn start_controller(
    args: &Args,
    store: Store,
    state: Persisted,
    first: bool,
    view: KernelView,
) -> Result<Controller, ControlError> {
    let dp = Dataplane::open(&args.bpffs)?;
    tracing::info!(
        program_id = dp.program_id(),
        adopted = dp.adopted(),
        bpffs = %args.bpffs.display(),
        "{}",
        if dp.adopted() {
            "adopted the running data plane"
        } else if dp.upgrading() {
            "loaded this build's data plane beside the running one (upgrade)"
        } else {
            "loaded the data plane"
        }
    );
    Controller::start(store, state, first, dp, view)
}

/// Keeps next hops, interfaces and local addresses in step with the kernel:
/// re-reads on every netlink notification, after every change, and every 5 s.
async fn follow_kernel(
    handle: rtnetlink::Handle,
    ctl: Arc<Mutex<Controller>>,
    changed: Arc<Notify>,
) {
    let mut events = match crate::netlink::subscribe() {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("no netlink notifications ({e}); polling only");
            None
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut ticks = 0u64;
    loop {
        // After a change of the desired state next hops may be new even if
        // the kernel is not; every 30 s failed neighbour requests are retried.
        let mut config_changed = false;
        tokio::select! {
            _ = tick.tick() => {
                ticks += 1;
                config_changed = ticks.is_multiple_of(6);
            }
            _ = changed.notified() => config_changed = true,
            Some(_) = async { match events.as_mut() { Some(e) => e.next().await, None => std::future::pending().await } } => {
                // Coalesce bursts of notifications.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let view = match crate::netlink::dump(&handle).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("{e}");
                continue;
            }
        };
        let c = ctl.clone();
        let missing = tokio::task::spawn_blocking(move || {
            let mut c = c.lock().unwrap_or_else(|p| p.into_inner());
            if c.kernel_changed(view) || config_changed {
                c.unresolved()
            } else {
                Vec::new()
            }
        })
        .await
        .unwrap_or_default();
        for (ifindex, ip) in missing {
            if let Err(e) = crate::netlink::add_managed_neighbour(&handle, ifindex, ip).await {
                tracing::warn!("{e}");
            }
        }
    }
}
