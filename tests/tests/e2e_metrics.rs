//! End-to-end: `/metrics` answers while popd is writing a change.
//!
//! popd writes a change under its controller's lock, which a whole-config
//! apply holds for a long time (about a second with a million routes). A
//! scrape must not wait for it: Prometheus times out, and a stalled scrape
//! hides the very moments an operator looks at. This test holds the lock with
//! a large `popctl apply`, proves it is held (a `popctl status`, which needs
//! the lock, stays blocked), scrapes, and checks the order of events: the
//! scrape answered while the status was still blocked, with the generation
//! from before the apply (a scrape that waited for the lock would show the
//! new one). Needs root.
use std::{
    fmt::Write as _,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use pop_lab::{popd::metric_value, topology};
use pop_tests::lab_env::LabEnv;

/// Namespace (and veth, bpffs) prefix of this test.
const PREFIX: &str = "ptmet-";
/// Routes of the big apply: enough that writing them holds the controller's
/// lock for well over [`BLOCKED`] in a debug build. Should an apply be over
/// before a `popctl status` was seen blocked, the next size is tried.
const ROUTES: [u32; 3] = [30_000, 100_000, 300_000];
/// A `popctl status` still running after this long is waiting for the lock
/// (it answers in milliseconds otherwise).
const BLOCKED: Duration = Duration::from_millis(250);

type Env = LabEnv;

fn start() -> Result<Env> {
    LabEnv::started(PREFIX)
}

/// The lab's config plus `routes` /24s via the upstream.
fn big_config(routes: u32) -> String {
    let mut s = topology::full_config();
    for i in 0..routes {
        let _ = write!(
            s,
            "\n[[routes]]\nprefix = \"{}.{}.{}.0/24\"\nvia = [\"192.0.2.1\"]\ndev = \"eth0\"\n",
            20 + i / 65536,
            (i / 256) % 256,
            i % 256
        );
    }
    s
}

fn popctl(env: &Env, args: &[&str]) -> Result<Child> {
    let bin = pop_lab::popd::test_bin_dir()?.join("popctl");
    Command::new(bin)
        .arg("--socket")
        .arg(env.popd.socket())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting popctl")
}

fn running(child: &mut Child) -> Result<bool> {
    Ok(child.try_wait()?.is_none())
}

fn generation(scrape: &str) -> Result<f64> {
    metric_value(scrape, "pop_config_generation", &[]).context("no pop_config_generation")
}

/// What one apply showed.
enum Seen {
    /// A scrape answered, with the old generation, while a `popctl status`
    /// stayed blocked: it took this long.
    ScrapeDuringLock(Duration),
    /// The lock was seen held, but no scrape answered during it.
    ScrapesWaited,
    /// The apply was over before a `popctl status` was seen blocked.
    TooShort,
}

fn apply_and_scrape(env: &Env, routes: u32) -> Result<Seen> {
    let old_generation = generation(&env.popd.metrics()?)?;
    let file = env.popd.state_dir().join("big.toml");
    std::fs::write(&file, big_config(routes))?;
    let mut apply = popctl(env, &["apply", &file.to_string_lossy()])?;
    let started = Instant::now();
    let mut lock_seen = false;
    let mut observed = None;
    while observed.is_none() && running(&mut apply)? {
        let mut status = popctl(env, &["status"])?;
        thread::sleep(BLOCKED);
        if !running(&mut status)? {
            // Not blocked: the apply has not taken the lock yet.
            continue;
        }
        // The lock is held (by the apply): scrape now.
        lock_seen = true;
        let t = Instant::now();
        let scrape = env.popd.metrics()?;
        let took = t.elapsed();
        let status_blocked = running(&mut status)?;
        let seen = generation(&scrape)?;
        eprintln!(
            "scrape in {took:?} at {:?} into the apply of {routes} routes; status still \
             blocked: {status_blocked}; generation {seen} (before: {old_generation})",
            started.elapsed()
        );
        if status_blocked && seen == old_generation {
            observed = Some(took);
        }
        let _ = status.wait();
    }
    let out = apply.wait_with_output()?;
    ensure!(
        out.status.success(),
        "popctl apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("apply of {routes} routes took {:?}", started.elapsed());
    // The apply is done: the next scrape shows its generation and routes.
    let after = env.popd.metrics()?;
    ensure!(
        generation(&after)? > old_generation,
        "generation after the apply: {}",
        generation(&after)?
    );
    let configured = metric_value(
        &after,
        "pop_routes",
        &[("family", "ipv4"), ("source", "config")],
    )
    .context("no pop_routes{family=\"ipv4\",source=\"config\"}")?;
    ensure!(
        configured >= f64::from(routes),
        "pop_routes{{family=\"ipv4\",source=\"config\"}} is {configured} after applying {routes} routes"
    );
    Ok(match (observed, lock_seen) {
        (Some(took), _) => Seen::ScrapeDuringLock(took),
        (None, true) => Seen::ScrapesWaited,
        (None, false) => Seen::TooShort,
    })
}

fn scenario(env: &mut Env) -> Result<()> {
    for routes in ROUTES {
        match apply_and_scrape(env, routes)? {
            Seen::ScrapeDuringLock(took) => {
                eprintln!("a scrape during the apply of {routes} routes answered in {took:?}");
                return Ok(());
            }
            Seen::ScrapesWaited => bail!(
                "no scrape answered while the controller's lock was held during an apply of \
                 {routes} routes: /metrics waits for changes being written"
            ),
            Seen::TooShort => eprintln!("the apply of {routes} routes was too short to observe"),
        }
    }
    bail!(
        "no apply held the controller's lock long enough to observe (up to {} routes)",
        ROUTES[ROUTES.len() - 1]
    )
}

#[test]
fn metrics_answer_while_a_change_holds_the_controller() {
    let mut env = match start() {
        Ok(env) => env,
        Err(e) => panic!("setting up the lab and popd: {e:#}"),
    };
    if let Err(e) = scenario(&mut env) {
        panic!(
            "{e:#}\n--- popd log ({}) ends with:\n{}",
            env.popd.log_path().display(),
            env.popd.log_tail(30)
        );
    }
}
