use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};

use super::error::{rte_errno, strerror, DpdkError};

/// `rte_eal_init` succeeds at most once per process, even after
/// `rte_eal_cleanup`; this flag turns a second attempt into a typed error.
static EAL_STARTED: AtomicBool = AtomicBool::new(false);

/// The initialised Environment Abstraction Layer. Owning it is the proof
/// that DPDK calls are allowed; dropping it runs `rte_eal_cleanup`, so it
/// must outlive every port, mempool and launched worker.
pub struct Eal {
    cleaned: bool,
    init_log: String,
}

/// DPDK's log, captured in memory while EAL initialises, so that a failed
/// probe can be reported as one line that names the device and the cause
/// instead of a screen of EAL chatter.
struct LogCapture {
    file: *mut libc::FILE,
    // Boxed so the addresses given to open_memstream stay put.
    buf: Box<*mut c_char>,
    len: Box<usize>,
}

impl LogCapture {
    fn start() -> Option<LogCapture> {
        let mut buf: Box<*mut c_char> = Box::new(std::ptr::null_mut());
        let mut len: Box<usize> = Box::new(0);
        // SAFETY: both out pointers are heap slots that live as long as the
        // capture; open_memstream writes them on flush and close.
        let file = unsafe { libc::open_memstream(&mut *buf, &mut *len) };
        if file.is_null() {
            return None;
        }
        // SAFETY: `file` is a valid stream until `finish` closes it, after
        // pointing DPDK back at its default stream.
        unsafe { dpdk_sys::rte_openlog_stream(file.cast()) };
        Some(LogCapture { file, buf, len })
    }

    fn finish(mut self) -> String {
        // SAFETY: DPDK stops using `file` before we close it; after fclose
        // `buf`/`len` describe a malloc'd buffer we copy out and free.
        unsafe {
            dpdk_sys::rte_openlog_stream(std::ptr::null_mut());
            libc::fclose(self.file);
            let text = if self.buf.is_null() {
                String::new()
            } else {
                let bytes = std::slice::from_raw_parts(self.buf.cast::<u8>(), *self.len);
                String::from_utf8_lossy(bytes).into_owned()
            };
            libc::free(self.buf.cast());
            *self.buf = std::ptr::null_mut();
            text
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("lcore {lcore}: launch failed: {reason}")]
pub struct LaunchError {
    pub lcore: u32,
    pub reason: String,
}

/// Takes every real-time signal above SIGRTMIN that has no handler with
/// one that does nothing, before EAL probes any device, so that net_tap
/// finds none free and leaves its "Rx trigger" off.
///
/// With the trigger on, net_tap puts each tap fd in O_ASYNC mode, owned by
/// the process, with the first free real-time signal: every frame the
/// kernel queues on any tap raises it, and a handler bumps a counter that
/// lets an rx burst skip its read when nothing came. The kernel hands a
/// process-wide signal to the main thread first (our control thread) or
/// else wakes another thread for it. Measured with scripts/bench-sessions
/// (access port on net_tap), delivery was a quarter of the control thread's
/// time; steering the signals to the workers instead cost them a wakeup
/// per frame. With the trigger off, net_tap reads its fd on every rx burst
/// (one readv that finds nothing when idle): the cost of polling a
/// kernel-backed port, paid by the thread that polls it, and no thread is
/// interrupted. net_tap documents the fallback ("No Rx trigger signal
/// available"). Nothing in hdvrf uses these signals, and a stray one now
/// does nothing instead of ending the process. Handlers already installed
/// (by an embedding program) are left alone.
fn keep_tap_trigger_off() {
    extern "C" fn nothing(_: c_int) {}
    for sig in libc::SIGRTMIN() + 1..=libc::SIGRTMAX() {
        // SAFETY: sigaction with a null new action only reads the current
        // one into `old`, a zeroed plain C struct; the second call installs
        // a handler that touches no state (async-signal-safe), with an
        // empty mask. net_tap later only reads these actions.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0
                || old.sa_sigaction != libc::SIG_DFL
            {
                continue;
            }
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = nothing as extern "C" fn(c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

type Job = Box<dyn FnOnce() -> i32 + Send + 'static>;

extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Box<Job>` leaked by `Eal::launch` for exactly
    // this call; EAL calls the function once, so the box is reclaimed once.
    let job: Box<Job> = unsafe { Box::from_raw(arg.cast::<Job>()) };
    job()
}

impl Eal {
    /// Initialises DPDK from `args` (argv\[0\] is supplied here).
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal, DpdkError> {
        if EAL_STARTED.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::AlreadyInitialized);
        }
        let mut owned = vec![CString::new("hdvrf").expect("static")];
        for a in args {
            owned.push(
                CString::new(a.as_ref())
                    .map_err(|_| DpdkError::BadArgument(a.as_ref().to_owned()))?,
            );
        }
        // rte_eal_init may permute argv; give it a private pointer array.
        let mut argv: Vec<*mut c_char> = owned.iter().map(|c| c.as_ptr() as *mut c_char).collect();
        argv.push(std::ptr::null_mut());
        keep_tap_trigger_off();
        let capture = LogCapture::start();
        // SAFETY: argv holds `owned.len()` valid NUL-terminated strings that
        // outlive the call, followed by NULL; EAL only reorders the pointers.
        let rc = unsafe { dpdk_sys::rte_eal_init(owned.len() as c_int, argv.as_mut_ptr()) };
        let errno = rte_errno();
        let log = capture.map(LogCapture::finish).unwrap_or_default();
        if rc < 0 {
            return Err(DpdkError::EalInit {
                errno,
                reason: strerror(errno),
                log,
            });
        }
        Ok(Eal {
            cleaned: false,
            init_log: log,
        })
    }

    /// What DPDK logged during `rte_eal_init` (device probes included).
    pub fn init_log(&self) -> &str {
        &self.init_log
    }

    /// The lcore the calling (main) thread runs on.
    pub fn main_lcore(&self) -> u32 {
        // SAFETY: EAL is initialised (we hold `Eal`).
        unsafe { dpdk_sys::rte_get_main_lcore() }
    }

    /// Enabled worker lcores, in id order (the main lcore excluded).
    pub fn worker_lcores(&self) -> Vec<u32> {
        let mut out = Vec::new();
        let mut i: u32 = u32::MAX;
        loop {
            // SAFETY: EAL is initialised; `i` is either -1 (start) or an id
            // the previous call returned.
            i = unsafe { dpdk_sys::rte_get_next_lcore(i, 1, 0) };
            if i >= dpdk_sys::RTE_MAX_LCORE {
                return out;
            }
            out.push(i);
        }
    }

    /// Runs `job` on worker lcore `lcore`. The lcore must be idle; collect
    /// the job's return value with [`Eal::wait`].
    pub fn launch<F>(&self, lcore: u32, job: F) -> Result<(), LaunchError>
    where
        F: FnOnce() -> i32 + Send + 'static,
    {
        let boxed: Box<Job> = Box::new(Box::new(job));
        let arg = Box::into_raw(boxed).cast::<c_void>();
        // SAFETY: `trampoline` matches `lcore_function_t`; `arg` is a leaked
        // Box<Job> that the trampoline reclaims, or that we reclaim below
        // if the launch is refused (then EAL never calls the function).
        let rc = unsafe { dpdk_sys::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
        if rc != 0 {
            // SAFETY: the launch was refused, so nothing else owns `arg`.
            drop(unsafe { Box::from_raw(arg.cast::<Job>()) });
            return Err(LaunchError {
                lcore,
                reason: strerror(rc),
            });
        }
        Ok(())
    }

    /// Waits until the job on `lcore` returns and gives its return value.
    pub fn wait(&self, lcore: u32) -> i32 {
        // SAFETY: EAL is initialised; waiting on an idle lcore returns 0.
        unsafe { dpdk_sys::rte_eal_wait_lcore(lcore) }
    }

    /// Releases EAL resources. Ports and mempools must be gone first.
    pub fn cleanup(mut self) {
        self.do_cleanup();
    }

    fn do_cleanup(&mut self) {
        if !self.cleaned {
            self.cleaned = true;
            // SAFETY: called once, from the main thread, after every worker
            // has returned (callers wait on lcores before dropping `Eal`).
            unsafe { dpdk_sys::rte_eal_cleanup() };
        }
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        self.do_cleanup();
    }
}

/// The lcore id of the calling thread (`u32::MAX` off EAL threads).
#[inline]
pub fn lcore_id() -> u32 {
    // SAFETY: reads a per-thread variable; valid on any thread.
    unsafe { dpdk_sys::hdvrf_rte_lcore_id() }
}

/// The time-stamp counter.
#[inline(always)]
pub fn tsc() -> u64 {
    // SAFETY: rdtsc has no memory effects or preconditions.
    unsafe { dpdk_sys::hdvrf_rte_rdtsc() }
}

/// TSC ticks per second as EAL calibrated them.
pub fn tsc_hz() -> u64 {
    // SAFETY: reads a value EAL set at init (0 before init).
    unsafe { dpdk_sys::hdvrf_rte_get_tsc_hz() }
}

/// The DPDK version string of the library loaded at run time.
pub fn dpdk_version() -> String {
    // SAFETY: rte_version returns a static NUL-terminated string and may be
    // called before EAL init.
    unsafe { CStr::from_ptr(dpdk_sys::rte_version()) }
        .to_string_lossy()
        .into_owned()
}
