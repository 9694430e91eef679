//! Autoregressive decoding in plain Rust: [`Decoder::sample`] without Candle, for the CPU. Runs on
//! the plugin's worker thread every time the morph pad moves, in `drumvae render`, and in
//! evaluation; [`super::Vae::decode`] picks it whenever the model lives on the CPU.
//!
//! Why not Candle: a batch-1 decode is 64 sequential steps of matrix-VECTOR products plus a few
//! thousand elementwise ops. Through Candle every op allocates a fresh tensor and dispatches
//! through gemm (built for matrix-matrix products), which made a `groovae` decode take 6-7 ms. The
//! arithmetic itself is small; what costs is streaming the weights: one bar-decoder step touches
//! `4H x (27 + 2H) + 4H x 2H + 27 x H` floats, 3.3 MB for H = 256, more than the 1 MiB L2, so every
//! step streams them from L3. Everything here is arranged around that:
//!
//! - Weights are copied out of the tensors once, into [`Panels`]: output rows in tiles of
//!   [`TILE`], each tile stored column by column, so a matrix-vector product is ONE sequential pass
//!   over the weights with a tile of outputs held in registers (8 AVX registers) and each input
//!   value broadcast once. A step's matrices are laid out in the order they are used.
//! - The per-sequence conditioning input (z for the conductor and the flat decoder, the bar
//!   embedding c_u for the bar decoder) is projected once per sequence and becomes layer 0's gate
//!   bias, as in `lstm.rs`; it is not re-multiplied every step.
//! - The sampled input of a step (hits 0/1, velocity and offset only where there is a hit) is
//!   mostly zeros, so layer 0 only reads the weight columns of its nonzero entries. Skipping an
//!   exact zero changes no sum, so this is exact.
//! - All buffers are allocated once per decode call; a step allocates nothing.
//! - The inner loops use AVX2 + FMA (`std::arch::x86_64`) when the CPU has them, checked at run
//!   time; every other CPU (and aarch64) runs the portable loops, which the compiler vectorises.
//!   Both give the Candle reference's numbers within 1e-5 (they differ from it, and from each
//!   other, only in summation order, FMA rounding and exp/tanh approximations of ~1 ulp).
//!
//! Sampling is shared with the Candle path ([`HitSampling`]), so both draw identical hits from
//! identical predictions: same sanitising, same ChaCha8 stream per row, same draw order.
//!
//! One thread: splitting each product's tiles across two threads was measured (see the report in
//! the commit history and `benches/model_speed.rs`) and did not pay on this machine's 2 cores, so
//! a decode runs entirely on the calling thread.

use std::sync::Arc;

use candle_core::{DType, Result, Tensor};
use candle_nn::Linear;
use rand_chacha::ChaCha8Rng;

use super::decoder::{DecodeOptions, Decoder, HitSampling, SampleTrace};
use super::lstm::StackedLstm;
use crate::groove::{BARS, FEATURES, STEPS, STEPS_PER_BAR, VOICES};
pub(crate) use helper::Helper;

/// Output rows per tile: 64 f32 accumulators are 8 AVX registers, leaving the other 8 for the
/// broadcast input and the weights in flight.
const TILE: usize = 64;
/// Rows are padded to a multiple of one AVX register.
const LANES: usize = 8;

/// Which inner loops a [`FastDecoder`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Plain Rust loops, for every CPU.
    Portable,
    /// AVX2 + FMA intrinsics (x86-64 CPUs since Haswell / Zen 1).
    Avx2Fma,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub fn detect() -> Kernel {
        if Kernel::Avx2Fma.is_available() {
            Kernel::Avx2Fma
        } else {
            Kernel::Portable
        }
    }

    /// Whether this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Portable => true,
            Kernel::Avx2Fma => avx2_fma_detected(),
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2_fma_detected() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_fma_detected() -> bool {
    false
}

/// A `[rows, cols]` matrix laid out for `y = W x`: rows padded to [`LANES`] and cut into tiles of
/// [`TILE`] rows (the last one narrower); tile `t` holds its `width x cols` block column by column
/// (`[cols][width]`), tiles one after another. Computing a tile's outputs is then one sequential
/// read of its block.
struct Panels {
    rows: usize,
    /// `rows` rounded up to [`LANES`]; padding rows are zero.
    padded: usize,
    cols: usize,
    /// The data, with up to 16 floats of slack in front so that it can start on a cache line.
    buf: Vec<f32>,
    start: usize,
}

impl Panels {
    /// Columns `col0..col0 + cols` of the row-major `[rows, stride]` matrix `w`.
    fn new(w: &[f32], rows: usize, stride: usize, col0: usize, cols: usize) -> Panels {
        assert!(w.len() == rows * stride && col0 + cols <= stride);
        let padded = rows.div_ceil(LANES) * LANES;
        let len = padded * cols;
        let mut buf = vec![0.0f32; len + 16];
        // 64-byte alignment makes every 8-float load sit inside one cache line. Only speed
        // depends on it (all loads are unaligned loads), and the heap block never moves.
        let start = buf.as_ptr().align_offset(64).min(16);
        let data = &mut buf[start..start + len];
        let mut at = 0;
        for row0 in (0..padded).step_by(TILE) {
            let width = TILE.min(padded - row0);
            for k in 0..cols {
                for j in 0..width {
                    let r = row0 + j;
                    data[at] = if r < rows {
                        w[r * stride + col0 + k]
                    } else {
                        0.0
                    };
                    at += 1;
                }
            }
        }
        Panels {
            rows,
            padded,
            cols,
            buf,
            start,
        }
    }

    fn tile_count(&self) -> usize {
        self.padded.div_ceil(TILE)
    }

    /// `(first row, width, block)` of tile `t`.
    fn tile(&self, t: usize) -> (usize, usize, &[f32]) {
        let row0 = t * TILE;
        let width = TILE.min(self.padded - row0);
        let data = &self.buf[self.start..self.start + self.padded * self.cols];
        (
            row0,
            width,
            &data[row0 * self.cols..(row0 + width) * self.cols],
        )
    }

    /// Floats read by one product (padding included).
    fn floats(&self) -> usize {
        self.padded * self.cols
    }
}

/// The nonzero entries of a step's sampled input, `(column, value)`.
type Sparse = Vec<(usize, f32)>;

impl Kernel {
    /// Tile `t` of `y = bias + W x` (see [`Exec::matvec`]): writes the tile's rows into `out`.
    #[allow(clippy::too_many_arguments)]
    fn tile(
        self,
        w: &Panels,
        t: usize,
        bias: &[f32],
        sparse: &[(usize, f32)],
        dense: &[f32],
        dense_at: usize,
        out: &mut [f32],
    ) {
        let (row0, width, block) = w.tile(t);
        let bias = &bias[row0..row0 + width];
        assert!(out.len() == width && block.len() == width * w.cols);
        match self {
            Kernel::Portable => portable::tile(block, bias, sparse, dense, dense_at, out),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => {
                // SAFETY: a `Kernel::Avx2Fma` only reaches a decode after `is_available` said the
                // CPU has AVX2 and FMA (see `FastDecoder::with_kernel`), which is all the
                // function's `target_feature` requires.
                unsafe { avx2::tile(block, bias, sparse, dense, dense_at, out) }
            }
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx2Fma => unreachable!("AVX2 is never available off x86-64"),
        }
    }

    /// The LSTM cell on gate pre-activations `gates` (i, f, g, o, `hidden` each): updates `c` and
    /// writes the new `h`.
    fn lstm_cell(self, gates: &[f32], c: &mut [f32], h: &mut [f32]) {
        let hidden = c.len();
        assert!(gates.len() >= 4 * hidden && h.len() == hidden);
        match self {
            Kernel::Portable => portable::lstm_cell(gates, c, h, 0),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => {
                // SAFETY: as in `tile`, the CPU was checked to have AVX2 and FMA.
                let done = unsafe { avx2::lstm_cell(gates, c, h) };
                portable::lstm_cell(gates, c, h, done);
            }
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx2Fma => unreachable!("AVX2 is never available off x86-64"),
        }
    }

    /// `v = tanh(v)`.
    fn tanh(self, v: &mut [f32]) {
        match self {
            Kernel::Portable => portable::tanh(v, 0),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => {
                // SAFETY: as in `tile`, the CPU was checked to have AVX2 and FMA.
                let done = unsafe { avx2::tanh_slice(v) };
                portable::tanh(v, done);
            }
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx2Fma => unreachable!("AVX2 is never available off x86-64"),
        }
    }
}

/// How one decode call runs its matrix products: the kernel, and the helper thread when this
/// call could have it (see [`helper`]).
struct Exec<'a> {
    kernel: Kernel,
    team: Option<helper::Team<'a>>,
}

impl Exec<'_> {
    /// `y[..padded] = bias[..padded] + W x`, where `x` is zero except for the `sparse` entries and
    /// the dense tail `dense`, which covers the LAST `dense.len()` columns. `y` and `bias` hold at
    /// least `w.padded` values (padding rows come out as their bias). With a helper, the tiles are
    /// shared out between the two threads; each tile is computed whole by one of them, by the same
    /// code, so the result does not depend on who computed what.
    fn matvec(
        &self,
        w: &Panels,
        bias: &[f32],
        sparse: &[(usize, f32)],
        dense: &[f32],
        y: &mut [f32],
    ) {
        assert!(bias.len() >= w.padded && y.len() >= w.padded && dense.len() <= w.cols);
        let dense_at = w.cols - dense.len();
        assert!(sparse.iter().all(|&(k, _)| k < dense_at));
        match &self.team {
            Some(team) if w.tile_count() >= 2 => {
                team.matvec(self.kernel, w, bias, sparse, dense, dense_at, y)
            }
            _ => {
                for t in 0..w.tile_count() {
                    let (row0, width, _) = w.tile(t);
                    let out = &mut y[row0..row0 + width];
                    self.kernel.tile(w, t, bias, sparse, dense, dense_at, out);
                }
            }
        }
    }
}

/// The second thread that shares a decode's matrix products.
///
/// Why: a batch-1 decode is bound by streaming its weights from L3 (3.3 MB per groovae step, more
/// than a core's 1 MiB L2), and one core streams about 77 GB/s here, so one thread cannot go below
/// ~2.8 ms; two cores each streaming half the tiles double that (measured: the products of a
/// decode take 2.9 ms on one thread, 1.5 ms on two).
///
/// How: one helper thread per process, shared by every [`FastDecoder`] and kept alive by them (and
/// by the models holding them); it exits when the last one is dropped, so a plugin leaves no
/// thread behind. One decode call at a time gets it ([`Helper::team`]; a concurrent decode runs
/// alone). For each product the decode publishes a job and both threads claim tiles from one
/// atomic counter until none are left; so when the helper is descheduled or asleep the caller
/// simply computes every tile itself. The helper spins for a short while after each job (the next
/// product follows within microseconds) and then parks, so an idle plugin costs no CPU.
mod helper {
    use std::cell::Cell;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, MutexGuard, TryLockError, Weak};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use super::{Kernel, Panels};

    /// How long an idle helper spins before it parks.
    const SPIN: Duration = Duration::from_micros(200);

    /// One product to share: raw pointers to the caller's borrowed arguments, valid while the
    /// caller waits in [`Team::matvec`] (see the SAFETY notes there).
    #[derive(Clone, Copy)]
    struct Job {
        epoch: u32,
        kernel: Kernel,
        w: *const Panels,
        bias: (*const f32, usize),
        sparse: (*const (usize, f32), usize),
        dense: (*const f32, usize),
        dense_at: usize,
        y: (*mut f32, usize),
        tiles: u32,
    }

    // SAFETY: a `Job` is only a set of addresses; the threads that use them follow the protocol of
    // `Team::matvec`, which keeps the pointees alive and the written ranges disjoint.
    unsafe impl Send for Job {}

    impl Job {
        const NONE: Job = Job {
            epoch: 0,
            kernel: Kernel::Portable,
            w: std::ptr::null(),
            bias: (std::ptr::null(), 0),
            sparse: (std::ptr::null(), 0),
            dense: (std::ptr::null(), 0),
            dense_at: 0,
            y: (std::ptr::null_mut(), 0),
            tiles: 0,
        };

        /// Computes tile `t`.
        ///
        /// # Safety
        /// `self` was published by a [`Team::matvec`] that is still waiting, and this thread
        /// claimed `t` (a valid tile of that job) from the job's counter, so no other thread
        /// writes the tile's rows of `y`.
        unsafe fn run(&self, t: usize) {
            // SAFETY: per the contract, the caller of `Team::matvec` keeps every argument borrowed
            // (so alive and unchanged) until all claimed tiles are reported done, and `y`'s rows
            // of tile `t` are written by this thread only; `Team::matvec` checked that all
            // lengths match the panels.
            unsafe {
                let w = &*self.w;
                let bias = std::slice::from_raw_parts(self.bias.0, self.bias.1);
                let sparse = std::slice::from_raw_parts(self.sparse.0, self.sparse.1);
                let dense = std::slice::from_raw_parts(self.dense.0, self.dense.1);
                let (row0, width, _) = w.tile(t);
                assert!(row0 + width <= self.y.1);
                let out = std::slice::from_raw_parts_mut(self.y.0.add(row0), width);
                self.kernel
                    .tile(w, t, bias, sparse, dense, self.dense_at, out);
            }
        }
    }

    /// Claims the next tile of job `epoch`, if it is still the current job and has tiles left.
    fn claim(counter: &AtomicU64, epoch: u32, tiles: u32) -> Option<usize> {
        let mut current = counter.load(Ordering::Acquire);
        loop {
            let (e, next) = ((current >> 32) as u32, current as u32);
            if e != epoch || next >= tiles {
                return None;
            }
            match counter.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(next as usize),
                Err(now) => current = now,
            }
        }
    }

    fn pack(epoch: u32, next: u32) -> u64 {
        (u64::from(epoch) << 32) | u64::from(next)
    }

    /// What the two threads share.
    struct Shared {
        /// The current job, written by the decode before it bumps `counter`'s epoch.
        job: Mutex<Job>,
        /// `(epoch << 32) | next unclaimed tile` of the current job.
        counter: AtomicU64,
        /// The last epoch handed out (only the holder of `busy` changes it).
        epoch: AtomicU32,
        /// Tiles of the current job the helper has finished.
        helper_done: AtomicUsize,
        /// Set by the helper before it parks, so that a decode knows to wake it.
        sleeping: AtomicBool,
        /// Set when a tile panicked on the helper (never expected): the decode then panics too.
        failed: AtomicBool,
        exit: AtomicBool,
        /// Held by the decode call that uses the helper.
        busy: Mutex<()>,
    }

    /// The helper thread; dropping the last handle stops and joins it.
    pub(crate) struct Helper {
        shared: Arc<Shared>,
        thread: Option<JoinHandle<()>>,
    }

    /// The process's helper while anything holds it.
    static CURRENT: Mutex<Weak<Helper>> = Mutex::new(Weak::new());

    impl Helper {
        /// The process's helper, started if none is running; `None` on a single-core machine
        /// or if the thread cannot be started.
        pub(crate) fn shared() -> Option<Arc<Helper>> {
            if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
                return None;
            }
            let mut current = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = current.upgrade() {
                return Some(h);
            }
            let shared = Arc::new(Shared {
                job: Mutex::new(Job::NONE),
                counter: AtomicU64::new(0),
                epoch: AtomicU32::new(0),
                helper_done: AtomicUsize::new(0),
                sleeping: AtomicBool::new(false),
                failed: AtomicBool::new(false),
                exit: AtomicBool::new(false),
                busy: Mutex::new(()),
            });
            let for_thread = shared.clone();
            let thread = std::thread::Builder::new()
                .name("drumvae-decode-helper".into())
                .spawn(move || serve(&for_thread))
                .ok()?;
            let helper = Arc::new(Helper {
                shared,
                thread: Some(thread),
            });
            *current = Arc::downgrade(&helper);
            Some(helper)
        }

        /// The helper for one decode call, unless another call has it.
        pub(crate) fn team(&self) -> Option<Team<'_>> {
            let busy = match self.shared.busy.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return None,
            };
            Some(Team {
                helper: self,
                _busy: busy,
                mine: Cell::new(0),
            })
        }

        fn wake(&self) {
            if let Some(t) = &self.thread {
                t.thread().unpark();
            }
        }
    }

    impl std::fmt::Debug for Helper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Helper")
        }
    }

    impl Drop for Helper {
        fn drop(&mut self) {
            self.shared.exit.store(true, Ordering::SeqCst);
            self.wake();
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// The helper thread's loop: wait for a new job, claim and compute tiles until none are
    /// left, repeat.
    fn serve(shared: &Shared) {
        let mut seen = 0u32;
        loop {
            let mut idle = Instant::now();
            let mut spins = 0u32;
            loop {
                if shared.exit.load(Ordering::Acquire) {
                    return;
                }
                let epoch = (shared.counter.load(Ordering::Acquire) >> 32) as u32;
                if epoch != seen {
                    seen = epoch;
                    break;
                }
                std::hint::spin_loop();
                spins += 1;
                if spins.is_multiple_of(64) && idle.elapsed() > SPIN {
                    // Announce the nap, then look once more: a decode that published after this
                    // store sees `sleeping` and unparks us (both sides use SeqCst).
                    shared.sleeping.store(true, Ordering::SeqCst);
                    let epoch = (shared.counter.load(Ordering::SeqCst) >> 32) as u32;
                    if epoch == seen && !shared.exit.load(Ordering::SeqCst) {
                        std::thread::park();
                    }
                    shared.sleeping.store(false, Ordering::SeqCst);
                    idle = Instant::now();
                }
            }
            let job = *shared.job.lock().unwrap_or_else(|p| p.into_inner());
            if job.epoch != seen {
                continue; // Overtaken by a newer job; the loop above will see it.
            }
            while let Some(t) = claim(&shared.counter, seen, job.tiles) {
                // SAFETY: we claimed tile `t` of the current job `seen`, whose decode waits
                // until `helper_done` counts it (see `Team::matvec`).
                let ok = catch_unwind(AssertUnwindSafe(|| unsafe { job.run(t) })).is_ok();
                if !ok {
                    shared.failed.store(true, Ordering::SeqCst);
                }
                // After this the job's pointers are never touched again.
                shared.helper_done.fetch_add(1, Ordering::Release);
            }
        }
    }

    /// The helper, held by one decode call.
    pub(crate) struct Team<'a> {
        helper: &'a Helper,
        _busy: MutexGuard<'a, ()>,
        /// Tiles the decode's own thread computed of the current job.
        mine: Cell<usize>,
    }

    impl Team<'_> {
        /// [`super::Exec::matvec`] with the tiles shared between this thread and the helper;
        /// the arguments were checked by the caller.
        #[allow(clippy::too_many_arguments)]
        pub(super) fn matvec(
            &self,
            kernel: Kernel,
            w: &Panels,
            bias: &[f32],
            sparse: &[(usize, f32)],
            dense: &[f32],
            dense_at: usize,
            y: &mut [f32],
        ) {
            let shared = &*self.helper.shared;
            let tiles = u32::try_from(w.tile_count()).expect("fewer than 2^32 tiles");
            let epoch = match shared.epoch.load(Ordering::Relaxed).wrapping_add(1) {
                0 => 1, // 0 is the helper's "nothing seen yet"
                e => e,
            };
            shared.epoch.store(epoch, Ordering::Relaxed);
            // From here until `Finish` is dropped, `y` is only written through `job.y`, tile by
            // tile, by whichever thread claimed the tile.
            let job = Job {
                epoch,
                kernel,
                w,
                bias: (bias.as_ptr(), bias.len()),
                sparse: (sparse.as_ptr(), sparse.len()),
                dense: (dense.as_ptr(), dense.len()),
                dense_at,
                y: (y.as_mut_ptr(), y.len()),
                tiles,
            };
            shared.helper_done.store(0, Ordering::Relaxed);
            *shared.job.lock().unwrap_or_else(|p| p.into_inner()) = job;
            // Publishes the job (Release through SeqCst) and, paired with the helper's SeqCst
            // store of `sleeping`, guarantees that a helper going to sleep either sees the job or
            // is woken.
            shared.counter.store(pack(epoch, 0), Ordering::SeqCst);
            if shared.sleeping.load(Ordering::SeqCst) {
                self.helper.wake();
            }
            self.mine.set(0);
            let finish = Finish {
                team: self,
                epoch,
                tiles,
            };
            while let Some(t) = claim(&shared.counter, epoch, tiles) {
                // SAFETY: this thread claimed tile `t` of the job it published and is waiting
                // for (`finish` waits even if this panics), and its arguments are borrowed for
                // this whole call.
                unsafe { job.run(t) };
                self.mine.set(self.mine.get() + 1);
            }
            drop(finish);
            if shared.failed.load(Ordering::SeqCst) {
                panic!("a tile panicked on the decode helper thread");
            }
        }
    }

    /// Ends a shared product: closes the job to new claims and waits until the helper finished
    /// every tile it claimed, so that no pointer of the job outlives the borrow it came from. A
    /// drop guard so that it also runs if the caller unwinds.
    struct Finish<'a, 'b> {
        team: &'a Team<'b>,
        epoch: u32,
        tiles: u32,
    }

    impl Drop for Finish<'_, '_> {
        fn drop(&mut self) {
            let shared = &*self.team.helper.shared;
            let before = shared
                .counter
                .swap(pack(self.epoch, u32::MAX), Ordering::AcqRel);
            let claimed = (before as u32).min(self.tiles) as usize;
            let helper_has = claimed - self.team.mine.get();
            let start = Instant::now();
            while shared.helper_done.load(Ordering::Acquire) != helper_has {
                // A tile takes microseconds; if the helper was descheduled mid-tile, give the
                // core back instead of burning it.
                if start.elapsed() > Duration::from_micros(50) {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
        }
    }
}

/// `1 / (1 + e^-x)`, written as Candle's sigmoid is.
fn sigmoid(x: f32) -> f32 {
    ((-x).exp() + 1.0).recip()
}

/// The kernels in plain Rust: the fallback for every CPU, and the tails the AVX2 kernels leave.
mod portable {
    use super::sigmoid;

    /// One tile: `out = bias + block x` (see [`super::Kernel::tile`]).
    pub(super) fn tile(
        block: &[f32],
        bias: &[f32],
        sparse: &[(usize, f32)],
        dense: &[f32],
        dense_at: usize,
        out: &mut [f32],
    ) {
        let width = out.len();
        out.copy_from_slice(bias);
        for &(k, v) in sparse {
            for (o, &wk) in out.iter_mut().zip(&block[k * width..(k + 1) * width]) {
                *o += v * wk;
            }
        }
        for (column, &v) in block[dense_at * width..].chunks_exact(width).zip(dense) {
            for (o, &wk) in out.iter_mut().zip(column) {
                *o += v * wk;
            }
        }
    }

    /// The cell for units `from..`, as Candle's reference computes it.
    pub(super) fn lstm_cell(gates: &[f32], c: &mut [f32], h: &mut [f32], from: usize) {
        let n = c.len();
        for j in from..n {
            let i = sigmoid(gates[j]);
            let f = sigmoid(gates[n + j]);
            let g = gates[2 * n + j].tanh();
            let o = sigmoid(gates[3 * n + j]);
            c[j] = f * c[j] + i * g;
            h[j] = o * c[j].tanh();
        }
    }

    /// `tanh` of `v[from..]`.
    pub(super) fn tanh(v: &mut [f32], from: usize) {
        for x in &mut v[from..] {
            *x = x.tanh();
        }
    }
}

/// AVX2 + FMA kernels. Every function here has `#[target_feature(enable = "avx2,fma")]`, so
/// calling one from outside needs the CPU check (see [`Kernel::tile`]); inside, only the loads
/// and stores through pointers are `unsafe`, and they go through [`load`] and [`store`], which
/// take fixed-size arrays, so the bounds are the type's.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn load(a: &[f32; 8]) -> __m256 {
        // SAFETY: `a` is 8 readable floats; `loadu` has no alignment requirement.
        unsafe { _mm256_loadu_ps(a.as_ptr()) }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn store(a: &mut [f32; 8], v: __m256) {
        // SAFETY: `a` is 8 writable floats; `storeu` has no alignment requirement.
        unsafe { _mm256_storeu_ps(a.as_mut_ptr(), v) }
    }

    /// One tile: `out = bias + block x` (see [`super::Kernel::tile`]).
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn tile(
        block: &[f32],
        bias: &[f32],
        sparse: &[(usize, f32)],
        dense: &[f32],
        dense_at: usize,
        out: &mut [f32],
    ) {
        match out.len() / 8 {
            8 => tile_n::<8>(block, bias, sparse, dense, dense_at, out),
            7 => tile_n::<7>(block, bias, sparse, dense, dense_at, out),
            6 => tile_n::<6>(block, bias, sparse, dense, dense_at, out),
            5 => tile_n::<5>(block, bias, sparse, dense, dense_at, out),
            4 => tile_n::<4>(block, bias, sparse, dense, dense_at, out),
            3 => tile_n::<3>(block, bias, sparse, dense, dense_at, out),
            2 => tile_n::<2>(block, bias, sparse, dense, dense_at, out),
            1 => tile_n::<1>(block, bias, sparse, dense, dense_at, out),
            _ => unreachable!("tiles are 8 to 64 rows wide"),
        }
    }

    /// One tile of `8 N` rows: `N` registers of accumulators, one pass over the block.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn tile_n<const N: usize>(
        block: &[f32],
        bias: &[f32],
        sparse: &[(usize, f32)],
        dense: &[f32],
        dense_at: usize,
        out: &mut [f32],
    ) {
        // The block as columns of N registers' worth of weights: no index below can be out of
        // bounds, so the loops carry no checks.
        let (lanes, _) = block.as_chunks::<8>();
        let (columns, _) = lanes.as_chunks::<N>();
        let (bias, _) = bias.as_chunks::<8>();
        let mut acc = [_mm256_setzero_ps(); N];
        for (a, b) in acc.iter_mut().zip(bias) {
            *a = load(b);
        }
        for &(k, v) in sparse {
            let x = _mm256_set1_ps(v);
            for (a, wk) in acc.iter_mut().zip(&columns[k]) {
                *a = _mm256_fmadd_ps(x, load(wk), *a);
            }
        }
        for (column, &v) in columns[dense_at..].iter().zip(dense) {
            let x = _mm256_set1_ps(v);
            for (a, wk) in acc.iter_mut().zip(column) {
                *a = _mm256_fmadd_ps(x, load(wk), *a);
            }
        }
        let (out, _) = out.as_chunks_mut::<8>();
        for (o, a) in out.iter_mut().zip(acc) {
            store(o, a);
        }
    }

    /// `e^x` for x in about ±87 (clamped), Cephes' `expf`: within 2 ulp.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn exp(x: __m256) -> __m256 {
        // Clamped so that 2^n stays a normal float: e^-87.33 is about the smallest one.
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(-87.33)),
            _mm256_set1_ps(88.37),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        // r = x - n ln 2, with ln 2 split in two so that n * ln2_hi is exact.
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        for coefficient in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(coefficient));
        }
        let p = _mm256_fmadd_ps(
            p,
            _mm256_mul_ps(r, r),
            _mm256_add_ps(r, _mm256_set1_ps(1.0)),
        );
        let two_n = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(p, _mm256_castsi256_ps(two_n))
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn sigmoid(x: __m256) -> __m256 {
        let one = _mm256_set1_ps(1.0);
        let e = exp(_mm256_sub_ps(_mm256_setzero_ps(), x));
        _mm256_div_ps(one, _mm256_add_ps(e, one))
    }

    /// Cephes' `tanhf`: an odd polynomial below |x| = 0.625, `1 - 2 / (e^2|x| + 1)` above.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn tanh(x: __m256) -> __m256 {
        let sign = _mm256_set1_ps(-0.0);
        let ax = _mm256_andnot_ps(sign, x);
        let one = _mm256_set1_ps(1.0);
        let e = exp(_mm256_add_ps(ax, ax));
        let big = _mm256_sub_ps(
            one,
            _mm256_div_ps(_mm256_set1_ps(2.0), _mm256_add_ps(e, one)),
        );
        let big = _mm256_or_ps(big, _mm256_and_ps(sign, x));
        let z = _mm256_mul_ps(x, x);
        let mut p = _mm256_set1_ps(-5.704_988_7e-3);
        // The published minimax coefficients, written as printed (f32 rounds them).
        #[allow(clippy::excessive_precision)]
        let coefficients = [2.063_908_9e-2, -5.373_971_6e-2, 0.133_314_42, -0.333_332_82];
        for coefficient in coefficients {
            p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(coefficient));
        }
        let small = _mm256_fmadd_ps(_mm256_mul_ps(p, z), x, x);
        let is_small = _mm256_cmp_ps::<_CMP_LT_OQ>(ax, _mm256_set1_ps(0.625));
        _mm256_blendv_ps(big, small, is_small)
    }

    /// The cell for the first multiple of 8 units; returns how many it did.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn lstm_cell(gates: &[f32], c: &mut [f32], h: &mut [f32]) -> usize {
        let n = c.len();
        let at = |j: usize| -> &[f32; 8] { gates[j..j + 8].try_into().expect("8 floats") };
        let (cs, _) = c.as_chunks_mut::<8>();
        let (hs, _) = h.as_chunks_mut::<8>();
        for (q, (c8, h8)) in cs.iter_mut().zip(hs.iter_mut()).enumerate() {
            let j = 8 * q;
            let i = sigmoid(load(at(j)));
            let f = sigmoid(load(at(n + j)));
            let g = tanh(load(at(2 * n + j)));
            let o = sigmoid(load(at(3 * n + j)));
            let c_new = _mm256_add_ps(_mm256_mul_ps(f, load(c8)), _mm256_mul_ps(i, g));
            store(c8, c_new);
            store(h8, _mm256_mul_ps(o, tanh(c_new)));
        }
        n / 8 * 8
    }

    /// `tanh` of the first multiple of 8 values; returns how many it did.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn tanh_slice(v: &mut [f32]) -> usize {
        let (chunks, _) = v.as_chunks_mut::<8>();
        for c in chunks.iter_mut() {
            store(c, tanh(load(c)));
        }
        v.len() / 8 * 8
    }
}

/// Copies a tensor's values to the host as f32.
fn host(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

/// A linear layer `y = W x + b` (Candle's `[out, in]` weight).
struct FastLinear {
    w: Panels,
    /// `b`, padded like the rows.
    bias: Vec<f32>,
}

impl FastLinear {
    fn new(linear: &Linear) -> Result<FastLinear> {
        let (rows, cols) = linear.weight().dims2()?;
        let w = Panels::new(&host(linear.weight())?, rows, cols, 0, cols);
        let mut bias = match linear.bias() {
            Some(b) => host(b)?,
            None => vec![0.0; rows],
        };
        if bias.len() != rows {
            candle_core::bail!("linear bias has {} values for {rows} rows", bias.len());
        }
        bias.resize(w.padded, 0.0);
        Ok(FastLinear { w, bias })
    }

    fn inputs(&self) -> usize {
        self.w.cols
    }

    fn outputs(&self) -> usize {
        self.w.rows
    }

    /// `y[..padded] = W x + b`.
    fn apply(&self, ex: &Exec, x: &[f32], y: &mut [f32]) {
        ex.matvec(&self.w, &self.bias, &[], x, y);
    }
}

/// One LSTM layer: gates `= W [x, h] + bias`, with the conditioning input folded into the bias.
struct FastLayer {
    /// `[4H, input + H]`: the per-step input's columns, then the recurrent ones.
    w: Panels,
    /// `[4H, cond]`, when the layer has a conditioning input.
    w_cond: Option<Panels>,
    /// `bias_ih + bias_hh`, padded.
    bias: Vec<f32>,
    input: usize,
}

impl FastLayer {
    fn new(layer: &super::lstm::Lstm) -> Result<FastLayer> {
        let (w_ih, w_hh, b_ih, b_hh) = layer.weights();
        let (hidden, input, cond) = (layer.hidden(), layer.input(), layer.cond());
        let g = 4 * hidden;
        let (w_ih, w_hh) = (host(w_ih)?, host(w_hh)?);
        if w_ih.len() != g * (input + cond) || w_hh.len() != g * hidden {
            candle_core::bail!("LSTM weights do not match the layer's sizes");
        }
        // [x, h] side by side, as `lstm.rs` concatenates them for its fused gate product.
        let mut w = Vec::with_capacity(g * (input + hidden));
        for r in 0..g {
            w.extend_from_slice(&w_ih[r * (input + cond)..r * (input + cond) + input]);
            w.extend_from_slice(&w_hh[r * hidden..(r + 1) * hidden]);
        }
        let w = Panels::new(&w, g, input + hidden, 0, input + hidden);
        let w_cond = (cond > 0).then(|| Panels::new(&w_ih, g, input + cond, input, cond));
        // Summed as Candle sums them (`bias_ih + bias_hh`).
        let mut bias: Vec<f32> = host(b_ih)?
            .iter()
            .zip(host(b_hh)?)
            .map(|(a, b)| a + b)
            .collect();
        bias.resize(w.padded, 0.0);
        Ok(FastLayer {
            w,
            w_cond,
            bias,
            input,
        })
    }
}

/// A stacked LSTM: layer 0 reads `[x, cond]`, layer k > 0 reads layer k - 1's `h`.
struct FastStack {
    layers: Vec<FastLayer>,
    hidden: usize,
    cond: usize,
}

impl FastStack {
    fn new(stack: &StackedLstm) -> Result<FastStack> {
        Ok(FastStack {
            layers: (0..stack.layers())
                .map(|k| FastLayer::new(stack.layer(k)))
                .collect::<Result<_>>()?,
            hidden: stack.hidden(),
            cond: stack.layer(0).cond(),
        })
    }

    fn input(&self) -> usize {
        self.layers[0].input
    }

    /// Floats of weights one step reads (padding included, the sampled input's columns all
    /// counted), and its multiply-adds.
    fn step_cost(&self) -> (usize, usize) {
        let floats = self.layers.iter().map(|l| l.w.floats()).sum();
        let macs = self.layers.iter().map(|l| l.w.rows * l.w.cols).sum();
        (floats, macs)
    }

    /// The same for conditioning one sequence.
    fn condition_cost(&self) -> (usize, usize) {
        let w = self.layers[0].w_cond.as_ref();
        (
            w.map_or(0, Panels::floats),
            w.map_or(0, |w| w.rows * w.cols),
        )
    }
}

/// The running state of a [`FastStack`] for one sequence: every buffer a step writes.
struct StackState {
    /// Per layer, the product's dense input: layer 0 `[h_0]`, layer k `[h_(k-1), h_k]`. A layer
    /// writes its new `h` into its own slot and copies it to the front of the next layer's.
    xh: Vec<Vec<f32>>,
    /// Per layer, the cell state.
    c: Vec<Vec<f32>>,
    /// Gate pre-activations, `4H` padded.
    gates: Vec<f32>,
    /// Layer 0's gate bias for this sequence: `bias + W_cond cond`.
    bias0: Vec<f32>,
}

impl StackState {
    fn new(stack: &FastStack) -> StackState {
        let h = stack.hidden;
        StackState {
            xh: (0..stack.layers.len())
                .map(|k| vec![0.0; if k == 0 { h } else { 2 * h }])
                .collect(),
            c: vec![vec![0.0; h]; stack.layers.len()],
            gates: vec![0.0; stack.layers[0].w.padded],
            bias0: vec![0.0; stack.layers[0].w.padded],
        }
    }

    /// Layer `k`'s `h`.
    fn h(&self, k: usize) -> &[f32] {
        let xh = &self.xh[k];
        &xh[xh.len() - self.c[k].len()..]
    }

    /// The top layer's `h`.
    fn top(&self) -> &[f32] {
        self.h(self.xh.len() - 1)
    }

    /// Starts a sequence: the initial `(h, c)` of every layer from `init = tanh(linear(emb))`,
    /// laid out `[h0, c0, h1, c1, ...]` as `decoder.rs` splits it, and layer 0's bias from
    /// `cond` (empty when the stack has no conditioning input).
    fn start(&mut self, stack: &FastStack, ex: &Exec, init: &[f32], cond: &[f32]) {
        let h = stack.hidden;
        for layer in 0..stack.layers.len() {
            let at = 2 * layer * h;
            let len = self.xh[layer].len();
            self.xh[layer][len - h..].copy_from_slice(&init[at..at + h]);
            self.c[layer].copy_from_slice(&init[at + h..at + 2 * h]);
        }
        let first = &stack.layers[0];
        match &first.w_cond {
            Some(w) => ex.matvec(w, &first.bias, &[], cond, &mut self.bias0),
            None => self.bias0.copy_from_slice(&first.bias),
        }
    }

    /// One step through every layer; `x` is the per-step input's nonzero entries.
    fn step(&mut self, stack: &FastStack, ex: &Exec, x: &[(usize, f32)]) {
        let h = stack.hidden;
        let n = stack.layers.len();
        for (l, layer) in stack.layers.iter().enumerate() {
            let (bias, sparse) = if l == 0 {
                (&self.bias0[..], x)
            } else {
                (&layer.bias[..], &[][..])
            };
            ex.matvec(&layer.w, bias, sparse, &self.xh[l], &mut self.gates);
            let len = self.xh[l].len();
            ex.kernel
                .lstm_cell(&self.gates, &mut self.c[l], &mut self.xh[l][len - h..]);
            if l + 1 < n {
                let (this, above) = self.xh.split_at_mut(l + 1);
                above[0][..h].copy_from_slice(&this[l][len - h..]);
            }
        }
    }
}

/// Which decoder, with its weights laid out for stepping.
enum Kind {
    Hierarchical {
        conductor_init: FastLinear,
        conductor: FastStack,
        bar_init: FastLinear,
        bar: FastStack,
    },
    Flat {
        init: FastLinear,
        lstm: FastStack,
    },
}

/// Weights read and multiply-adds done by decoding one batch row, counted over every matrix
/// product (padding rows included in the bytes; all of a step's input columns counted, although
/// the zero ones are skipped). Elementwise work (a few thousand exp/tanh per step) is not counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeCost {
    /// Bytes of f32 weights streamed.
    pub weight_bytes: usize,
    /// Multiply-adds (FLOPs / 2).
    pub multiply_adds: usize,
}

/// A [`Decoder`]'s weights copied out and laid out for fast autoregressive decoding on the CPU;
/// see the module documentation. Built once per model (a few milliseconds) and immutable after,
/// so it can be shared between threads; it does not follow later changes to the decoder's
/// tensors (build a new one).
pub struct FastDecoder {
    kind: Kind,
    output: FastLinear,
    latent: usize,
    kernel: Kernel,
    /// The second thread, when the machine has two cores or more (see [`helper`]).
    helper: Option<Arc<Helper>>,
}

impl std::fmt::Debug for FastDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Hierarchical { .. } => "hierarchical",
            Kind::Flat { .. } => "flat",
        };
        f.debug_struct("FastDecoder")
            .field("kind", &kind)
            .field("latent", &self.latent)
            .field("kernel", &self.kernel)
            .field("threads", &self.threads())
            .finish_non_exhaustive()
    }
}

impl FastDecoder {
    /// Copies `decoder`'s weights (from any device), picks [`Kernel::detect`], and uses the
    /// process's decode helper thread when the machine has two cores or more.
    pub fn new(decoder: &Decoder) -> Result<FastDecoder> {
        Self::with_helper(decoder, Helper::shared())
    }

    /// [`FastDecoder::new`] with the helper given (the model keeps one for its per-call builds).
    pub(crate) fn with_helper(
        decoder: &Decoder,
        helper: Option<Arc<Helper>>,
    ) -> Result<FastDecoder> {
        let (kind, output, latent) = match decoder {
            Decoder::Hierarchical(d) => {
                let (conductor_init, conductor, bar_init, bar, output) = d.parts();
                let conductor_init = FastLinear::new(conductor_init)?;
                let latent = conductor_init.inputs();
                let kind = Kind::Hierarchical {
                    conductor_init,
                    conductor: FastStack::new(conductor)?,
                    bar_init: FastLinear::new(bar_init)?,
                    bar: FastStack::new(bar)?,
                };
                (kind, FastLinear::new(output)?, latent)
            }
            Decoder::Flat(d) => {
                let (init, lstm, output) = d.parts();
                let init = FastLinear::new(init)?;
                let latent = init.inputs();
                let kind = Kind::Flat {
                    init,
                    lstm: FastStack::new(lstm)?,
                };
                (kind, FastLinear::new(output)?, latent)
            }
        };
        let fast = FastDecoder {
            kind,
            output,
            latent,
            kernel: Kernel::detect(),
            helper,
        };
        fast.check_sizes()?;
        Ok(fast)
    }

    /// The same decoder running `kernel` (to compare kernels); fails if this CPU lacks it.
    pub fn with_kernel(mut self, kernel: Kernel) -> Result<FastDecoder> {
        if !kernel.is_available() {
            candle_core::bail!("this CPU cannot run the {kernel:?} kernel");
        }
        self.kernel = kernel;
        Ok(self)
    }

    /// The same decoder on `threads` threads: 1, or 2 (the caller and the shared helper; fails
    /// on a single-core machine). Decodes give the same results either way.
    pub fn with_threads(mut self, threads: usize) -> Result<FastDecoder> {
        self.helper = match threads {
            1 => None,
            2 => match self.helper.take().or_else(Helper::shared) {
                Some(h) => Some(h),
                None => candle_core::bail!("no second thread on this machine"),
            },
            n => candle_core::bail!("the fast decoder runs on 1 or 2 threads, not {n}"),
        };
        Ok(self)
    }

    /// How many threads a decode may use (it uses one when another decode has the helper).
    pub fn threads(&self) -> usize {
        1 + usize::from(self.helper.is_some())
    }

    /// The kernel it runs.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// The size of z.
    pub fn latent(&self) -> usize {
        self.latent
    }

    /// The stack that emits the notes, and the sizes every part must agree on.
    fn check_sizes(&self) -> Result<()> {
        let (note_stack, ok) = match &self.kind {
            Kind::Hierarchical {
                conductor_init,
                conductor,
                bar_init,
                bar,
            } => (
                bar,
                conductor.input() == 0
                    && conductor.cond == self.latent
                    && conductor_init.outputs() == 2 * conductor.layers.len() * conductor.hidden
                    && bar_init.inputs() == conductor.hidden
                    && bar_init.outputs() == 2 * bar.layers.len() * bar.hidden
                    && bar.cond == conductor.hidden,
            ),
            Kind::Flat { init, lstm } => (
                lstm,
                lstm.cond == self.latent && init.outputs() == 2 * lstm.layers.len() * lstm.hidden,
            ),
        };
        if !ok
            || note_stack.input() != FEATURES
            || self.output.inputs() != note_stack.hidden
            || self.output.outputs() != FEATURES
        {
            candle_core::bail!("the decoder's layer sizes do not fit together");
        }
        Ok(())
    }

    /// What decoding one row costs (see [`DecodeCost`]).
    pub fn cost_per_row(&self) -> DecodeCost {
        let mut floats = 0;
        let mut macs = 0;
        let mut add = |(f, m): (usize, usize), times: usize| {
            floats += f * times;
            macs += m * times;
        };
        let linear = |l: &FastLinear| (l.w.floats(), l.w.rows * l.w.cols);
        add(linear(&self.output), STEPS);
        match &self.kind {
            Kind::Hierarchical {
                conductor_init,
                conductor,
                bar_init,
                bar,
            } => {
                add(linear(conductor_init), 1);
                add(conductor.condition_cost(), 1);
                add(conductor.step_cost(), BARS);
                add(linear(bar_init), BARS);
                add(bar.condition_cost(), BARS);
                add(bar.step_cost(), STEPS);
            }
            Kind::Flat { init, lstm } => {
                add(linear(init), 1);
                add(lstm.condition_cost(), 1);
                add(lstm.step_cost(), STEPS);
            }
        }
        DecodeCost {
            weight_bytes: 4 * floats,
            multiply_adds: macs,
        }
    }

    /// [`Decoder::sample`]: decodes `z` (`N x latent` values, row-major) into N flat `64 x 27`
    /// grids, with the same sampling and the same numbers within 1e-5.
    pub fn sample(&self, z: &[f32], opts: &DecodeOptions) -> Result<Vec<Vec<f32>>> {
        Ok(self.run(z, opts, false)?.grids)
    }

    /// [`Decoder::sample_traced`]: the grids and every step's predictions.
    pub fn sample_traced(&self, z: &[f32], opts: &DecodeOptions) -> Result<SampleTrace> {
        self.run(z, opts, true)
    }

    fn run(&self, z: &[f32], opts: &DecodeOptions, trace: bool) -> Result<SampleTrace> {
        if !z.len().is_multiple_of(self.latent) {
            candle_core::bail!(
                "z has {} values, not a multiple of the latent size {}",
                z.len(),
                self.latent
            );
        }
        let n = z.len() / self.latent;
        let rule = HitSampling::new(opts);
        let mut work = Work::new(self);
        let ex = Exec {
            kernel: self.kernel,
            team: self.helper.as_ref().and_then(|h| h.team()),
        };
        let mut out = SampleTrace {
            grids: vec![vec![0.0; STEPS * FEATURES]; n],
            outputs: if trace {
                vec![vec![0.0; STEPS * FEATURES]; n]
            } else {
                Vec::new()
            },
        };
        for (row, z) in z.chunks_exact(self.latent).enumerate() {
            let mut rng = rule.rng(row);
            let record = out.outputs.get_mut(row).map(Vec::as_mut_slice);
            self.decode_row(
                z,
                &rule,
                &mut rng,
                &ex,
                &mut work,
                &mut out.grids[row],
                record,
            );
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn decode_row(
        &self,
        z: &[f32],
        rule: &HitSampling,
        rng: &mut ChaCha8Rng,
        ex: &Exec,
        work: &mut Work,
        grid: &mut [f32],
        mut record: Option<&mut [f32]>,
    ) {
        let k = ex;
        let notes = &mut work.notes;
        notes.sparse.clear();
        let mut step = 0;
        match &self.kind {
            Kind::Hierarchical {
                conductor_init,
                conductor,
                bar_init,
                bar,
            } => {
                let cs = work.conductor.as_mut().expect("hierarchical work");
                conductor_init.apply(k, z, &mut work.init);
                k.kernel.tanh(&mut work.init[..conductor_init.outputs()]);
                cs.start(conductor, k, &work.init, z);
                for _ in 0..BARS {
                    // The conductor does not see the notes, so bar u's embedding can be computed
                    // just before bar u.
                    cs.step(conductor, k, &[]);
                    let c_u = cs.top();
                    bar_init.apply(k, c_u, &mut work.init);
                    k.kernel.tanh(&mut work.init[..bar_init.outputs()]);
                    notes.state.start(bar, k, &work.init, c_u);
                    for _ in 0..STEPS_PER_BAR {
                        self.note_step(
                            bar,
                            rule,
                            rng,
                            ex,
                            notes,
                            grid,
                            record.as_deref_mut(),
                            step,
                        );
                        step += 1;
                    }
                }
            }
            Kind::Flat { init, lstm } => {
                init.apply(k, z, &mut work.init);
                k.kernel.tanh(&mut work.init[..init.outputs()]);
                notes.state.start(lstm, k, &work.init, z);
                for _ in 0..STEPS {
                    self.note_step(
                        lstm,
                        rule,
                        rng,
                        ex,
                        notes,
                        grid,
                        record.as_deref_mut(),
                        step,
                    );
                    step += 1;
                }
            }
        }
    }

    /// One step of the note-emitting stack: predict, sample, and make the next input.
    #[allow(clippy::too_many_arguments)]
    fn note_step(
        &self,
        stack: &FastStack,
        rule: &HitSampling,
        rng: &mut ChaCha8Rng,
        ex: &Exec,
        notes: &mut NoteWork,
        grid: &mut [f32],
        record: Option<&mut [f32]>,
        step: usize,
    ) {
        let k = ex;
        notes.state.step(stack, k, &notes.sparse);
        let raw = &mut notes.raw;
        self.output.apply(k, notes.state.top(), raw);
        // The heads as `decoder.rs` applies them: logits as they are, sigmoid velocities,
        // `0.5 tanh` offsets; scalar std functions, as Candle computes them.
        for r in &mut raw[VOICES..2 * VOICES] {
            *r = sigmoid(*r);
        }
        for r in &mut raw[2 * VOICES..FEATURES] {
            *r = r.tanh() * 0.5;
        }
        let cells = step * FEATURES..(step + 1) * FEATURES;
        rule.sample_row(&raw[..FEATURES], rng, &mut grid[cells.clone()]);
        if let Some(record) = record {
            record[cells.clone()].copy_from_slice(&raw[..FEATURES]);
        }
        notes.sparse.clear();
        notes.sparse.extend(
            grid[cells]
                .iter()
                .enumerate()
                .filter(|(_, v)| **v != 0.0)
                .map(|(i, &v)| (i, v)),
        );
    }
}

/// The note-emitting stack's buffers.
struct NoteWork {
    state: StackState,
    /// The output layer's 27 raw values, padded.
    raw: Vec<f32>,
    /// The previous step's sampled input, nonzero entries only.
    sparse: Sparse,
}

/// Every buffer of one decode call; reused for all its rows.
struct Work {
    conductor: Option<StackState>,
    notes: NoteWork,
    /// The initial-state projection of the current sequence (largest of the init layers, padded).
    init: Vec<f32>,
}

impl Work {
    fn new(fast: &FastDecoder) -> Work {
        let (conductor, notes, init) = match &fast.kind {
            Kind::Hierarchical {
                conductor_init,
                conductor,
                bar_init,
                bar,
            } => (
                Some(StackState::new(conductor)),
                StackState::new(bar),
                conductor_init.w.padded.max(bar_init.w.padded),
            ),
            Kind::Flat { init, lstm } => (None, StackState::new(lstm), init.w.padded),
        };
        Work {
            conductor,
            notes: NoteWork {
                state: notes,
                raw: vec![0.0; fast.output.w.padded],
                sparse: Vec::with_capacity(FEATURES),
            },
            init: vec![0.0; init],
        }
    }
}
