//! The bf16 product's tile engine on CPUs with AMX (Intel Sapphire Rapids and later): one
//! `tdpbf16ps` multiplies a 16 x 32 bf16 tile by a 32 x 16 one into 16 x 16 f32 accumulators,
//! 16,384 FLOPs per instruction.
//!
//! Why: measured on this project's current machine (Intel Xeon with AMX, 2 cores), one core
//! reaches ~1,160 GFLOP/s with `tdpbf16ps` against ~150-190 with AVX-512 f32 FMAs and only ~70-85
//! with `vdpbf16ps`, which this core executes at half the FMA rate: on such CPUs AMX is the only
//! way bf16 pays. The operands come in the layouts [`super::packed_matmul_bf16`] packs: the
//! right-hand side's panels are already AMX's "VNNI" B layout (a row per k-pair, 16 columns x 2
//! bf16 per 64 bytes) and the left-hand side is row-major pairs, AMX's A layout.
//!
//! Rust has no stable AMX intrinsics, so the instructions are written with `asm!`. Linux hands
//! out the 8 KiB tile state only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM,
//! XFEATURE_XTILEDATA)`); [`available`] asks once per process, and without a yes no tile
//! instruction is ever executed (it would raise SIGILL).

/// Rows (and 4-byte columns) of every tile we configure.
pub const TILE: usize = 16;

/// Whether this CPU has AMX-TILE and AMX-BF16 and the OS let this process use them. Asked once.
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::__cpuid_count;
    // CPUID leaf 7: EDX bit 22 = AMX-BF16, bit 24 = AMX-TILE (and the leaf must exist).
    let max_leaf = __cpuid_count(0, 0).eax;
    if max_leaf < 7 {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain system call with integer arguments; it only changes this process's
    // permission to use the tile state.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// The tile configuration (`ldtilecfg`'s 64-byte block, palette 1): all eight tiles 16 rows of
/// 64 bytes.
#[cfg(target_arch = "x86_64")]
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

/// The tile registers configured on the calling thread for [`Tiles::block`]; released on drop.
/// Tile state is per thread, so every thread that multiplies makes its own.
#[cfg(target_arch = "x86_64")]
pub struct Tiles(());

#[cfg(target_arch = "x86_64")]
impl Tiles {
    /// Configures the tiles on this thread.
    ///
    /// # Safety
    /// [`available`] must have returned true.
    pub unsafe fn configure() -> Tiles {
        let mut config = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            bytes_per_row: [0; 16],
            rows: [0; 16],
        };
        for t in 0..8 {
            config.bytes_per_row[t] = (TILE * 4) as u16;
            config.rows[t] = TILE as u8;
        }
        // SAFETY: AMX is available and permitted (caller); the block is 64-byte aligned.
        unsafe {
            std::arch::asm!("ldtilecfg [{}]", in(reg) &config as *const TileConfig, options(nostack, readonly));
        }
        Tiles(())
    }

    /// `c [32][32] = a · b` over `pairs` k-pairs (a multiple of 16): rows of `a` are pairs of bf16
    /// at `a_stride` u32 from each other (32 rows from `a`), `b` holds `pairs` rows of 32 pairs
    /// (a panel of [`super::packed_matmul_bf16::NR`] = 32 columns).
    ///
    /// # Safety
    /// `a` must be valid for 32 rows of `pairs` u32 at stride `a_stride`, `b` for `pairs * 32`
    /// u32; `pairs % 16 == 0`.
    pub unsafe fn block(
        &mut self,
        c: &mut [[f32; 32]; 32],
        a: *const u32,
        a_stride: usize,
        b: *const u32,
        pairs: usize,
    ) {
        debug_assert!(pairs.is_multiple_of(TILE));
        // SAFETY: tiles configured on this thread (`self`); every load reads 16 rows of 64 bytes
        // inside the ranges the caller guarantees, every store writes 16 rows of 64 bytes of `c`.
        unsafe {
            std::arch::asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
            let sa = a_stride * 4;
            for q in (0..pairs).step_by(TILE) {
                std::arch::asm!(
                    "tileloadd tmm4, [{a0} + {sa}*1]",
                    "tileloadd tmm5, [{a1} + {sa}*1]",
                    "tileloadd tmm6, [{b0} + {sb}*1]",
                    "tileloadd tmm7, [{b1} + {sb}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a0 = in(reg) a.add(q),
                    a1 = in(reg) a.add(TILE * a_stride + q),
                    b0 = in(reg) b.add(q * 32),
                    b1 = in(reg) b.add(q * 32 + 16),
                    sa = in(reg) sa,
                    sb = in(reg) 128usize,
                    options(nostack, readonly)
                );
            }
            let c = c.as_mut_ptr().cast::<f32>();
            std::arch::asm!(
                "tilestored [{c00} + {sc}*1], tmm0",
                "tilestored [{c01} + {sc}*1], tmm1",
                "tilestored [{c10} + {sc}*1], tmm2",
                "tilestored [{c11} + {sc}*1], tmm3",
                c00 = in(reg) c,
                c01 = in(reg) c.add(16),
                c10 = in(reg) c.add(16 * 32),
                c11 = in(reg) c.add(16 * 32 + 16),
                sc = in(reg) 128usize,
                options(nostack)
            );
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: only built by `configure`, after AMX was found available; releases this
        // thread's tile state.
        unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
    }
}
