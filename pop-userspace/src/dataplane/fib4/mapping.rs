//! A shared mapping of a BPF array map (BPF_F_MMAPABLE), mapped a chunk at a
//! time on first use. Also the IPv6 FIB's (`super::super::fib6`).
//!
//! The kernel maps every page of a BPF array at mmap time, and each counts in
//! this process's RSS: mapped whole, the FIB tables were ~130 MB of popd's
//! RSS with nothing in them (fib4 ~81 MB, fib6 ~52 MB), whatever popd
//! touched. Here the address range is reserved at once and each chunk
//! ([`CHUNK_BYTES`]) is mapped when a word in it is first read or written,
//! so only the parts of the tables a change reaches count. [`Mapping::unmap`]
//! gives all chunks back (after a full scan or a bulk load).
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use super::Fib4Error;

/// Bytes mapped at a time: 512 4-KiB pages.
pub(crate) const CHUNK_BYTES: usize = 2 << 20;

/// A lazily mapped BPF array map, unmapped on drop.
pub(crate) struct Mapping {
    map: &'static str,
    /// The reserved range: PROT_NONE where no chunk is mapped.
    ptr: NonNull<AtomicU32>,
    words: usize,
    fd: OwnedFd,
    mapped: Box<[AtomicBool]>,
}

fn reserve(at: *mut libc::c_void, bytes: usize) -> *mut libc::c_void {
    let fixed = if at.is_null() { 0 } else { libc::MAP_FIXED };
    // SAFETY: an anonymous PROT_NONE reservation; with MAP_FIXED only over
    // a range of our own reservation (a chunk given back).
    unsafe {
        libc::mmap(
            at,
            bytes,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | fixed,
            -1,
            0,
        )
    }
}

impl Mapping {
    /// Reserves the range for `bytes` of the map behind `fd` (page-rounded,
    /// within the map's size); maps nothing yet.
    pub(crate) fn new(
        map: &'static str,
        fd: BorrowedFd<'_>,
        bytes: usize,
    ) -> Result<Self, Fib4Error> {
        let err = |what: &str| Fib4Error::Map {
            map,
            reason: format!("{what}: {}", std::io::Error::last_os_error()),
        };
        let fd = fd
            .try_clone_to_owned()
            .map_err(|_| err("dup of the map fd"))?;
        let ptr = reserve(std::ptr::null_mut(), bytes);
        if ptr == libc::MAP_FAILED {
            return Err(err(&format!("reserving {bytes} bytes to map")));
        }
        let mut this = Self {
            map,
            ptr: NonNull::new(ptr.cast()).expect("mmap returned NULL without MAP_FAILED"),
            words: bytes / 4,
            fd,
            mapped: (0..bytes.div_ceil(CHUNK_BYTES))
                .map(|_| AtomicBool::new(false))
                .collect(),
        };
        // Map the first chunk now: a map that cannot be mapped at all (no
        // BPF_F_MMAPABLE, a size beyond the map's) is refused here, not at
        // first use.
        if bytes > 0 {
            this.map_chunk(0).map_err(|e| Fib4Error::Map {
                map,
                reason: format!("mmap of {bytes} bytes: {e}"),
            })?;
            this.unmap();
        }
        Ok(this)
    }

    fn chunk_range(&self, chunk: usize) -> (usize, usize) {
        let start = chunk * CHUNK_BYTES;
        (start, CHUNK_BYTES.min(self.words * 4 - start))
    }

    fn map_chunk(&self, chunk: usize) -> std::io::Result<()> {
        let (start, len) = self.chunk_range(chunk);
        // SAFETY: a shared mapping of the map's fd at the same offset as its
        // place in our reservation, replacing the PROT_NONE reservation (or
        // the same pages mapped by a racing call): the kernel checks the
        // range against the map and keeps the map alive while mapped.
        let ptr = unsafe {
            libc::mmap(
                self.ptr.as_ptr().cast::<u8>().add(start).cast(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                self.fd.as_fd().as_raw_fd(),
                start as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        self.mapped[chunk].store(true, Ordering::Release);
        Ok(())
    }

    pub(crate) fn word(&self, i: usize) -> &AtomicU32 {
        assert!(i < self.words, "mapping index {i} beyond {}", self.words);
        let chunk = i * 4 / CHUNK_BYTES;
        if !self.mapped[chunk].load(Ordering::Acquire) {
            if let Err(e) = self.map_chunk(chunk) {
                // The first chunk of the same map was mapped in `new`: only
                // running out of address space or mappings gets here.
                panic!("map {}: mmap of chunk {chunk}: {e}", self.map);
            }
        }
        // SAFETY: in bounds (checked), 4-aligned (page-aligned base), and the
        // chunk is mapped until `unmap` (which takes `&mut self`) or drop.
        unsafe { &*self.ptr.as_ptr().add(i) }
    }

    /// Gives back every mapped chunk (their pages leave this process's RSS;
    /// the map keeps its contents). The next access maps a chunk again.
    pub(crate) fn unmap(&mut self) {
        for chunk in 0..self.mapped.len() {
            if !self.mapped[chunk].swap(false, Ordering::AcqRel) {
                continue;
            }
            let (start, len) = self.chunk_range(chunk);
            // SAFETY: over a chunk of our own reservation, which nothing
            // borrows (`&mut self`).
            let at = unsafe { self.ptr.as_ptr().cast::<u8>().add(start) };
            if reserve(at.cast(), len) == libc::MAP_FAILED {
                // Still mapped: keep using it.
                self.mapped[chunk].store(true, Ordering::Release);
            }
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the reservation made in `new` (with the chunks mapped over
        // it), unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.words * 4) };
    }
}
