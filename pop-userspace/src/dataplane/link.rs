//! The few bpf() commands aya 0.14 does not wrap for pinned objects: open a
//! pin, read which program a link runs, swap a link's program atomically
//! (BPF_LINK_UPDATE, the hitless data-plane upgrade), and write many map
//! entries in one call (BPF_MAP_UPDATE_BATCH).
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_LINK_UPDATE: libc::c_long = 29;

/// bpf(cmd, attr): `attr` is the command's `union bpf_attr` member, zero-padded.
fn bpf(cmd: libc::c_long, attr: &mut [u64; 8]) -> io::Result<libc::c_long> {
    // SAFETY: attr is a valid, writable buffer of the size passed; the kernel
    // reads and writes at most that many bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr) as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Opens a pinned BPF object (BPF_OBJ_GET).
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    let mut attr = [0u64; 8];
    attr[0] = c.as_ptr() as u64; // pathname; bpf_fd = 0, file_flags = 0
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The id of the program a bpf_link runs (`struct bpf_link_info.prog_id`).
pub fn link_prog_id(link: &OwnedFd) -> io::Result<u32> {
    let mut info = [0u32; 32];
    let mut attr = [0u64; 8];
    // bpf_fd (u32), info_len (u32), info (u64).
    attr[0] = u64::from(link.as_raw_fd() as u32) | ((std::mem::size_of_val(&info) as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    // type, id, prog_id.
    Ok(info[2])
}

/// Makes `link` run `prog` from now on, atomically (BPF_LINK_UPDATE): every
/// packet runs either the old program or the new one.
pub fn link_update(link: &OwnedFd, prog: i32) -> io::Result<()> {
    let mut attr = [0u64; 8];
    // link_fd (u32), new_prog_fd (u32); flags = 0, old_prog_fd = 0.
    attr[0] = u64::from(link.as_raw_fd() as u32) | (u64::from(prog as u32) << 32);
    bpf(BPF_LINK_UPDATE, &mut attr).map(|_| ())
}

/// A 64-bit FNV-1a digest of a data-plane object, hex: names the build whose
/// program is pinned (`<bpffs>/build/<digest>`).
pub fn build_id(object: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in object {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Writes `count` entries into the map `map` in one call
/// (BPF_MAP_UPDATE_BATCH, flags 0: add or replace): `keys` and `values` hold
/// them back to back, in the map's key and value sizes. The kernel writes
/// them in order and stops at the first it refuses, which is left as it was.
/// Returns how many were written, and the refusal if there was one.
pub fn map_update_batch(
    map: BorrowedFd<'_>,
    keys: &[u8],
    values: &[u8],
    count: u32,
) -> (u32, io::Result<()>) {
    let mut attr = [0u64; 8];
    // in_batch, out_batch (unused for an update), keys, values,
    // count (u32) | map_fd (u32), elem_flags, flags.
    attr[2] = keys.as_ptr() as u64;
    attr[3] = values.as_ptr() as u64;
    attr[4] = u64::from(count) | (u64::from(map.as_raw_fd() as u32) << 32);
    let r = bpf(BPF_MAP_UPDATE_BATCH, &mut attr).map(|_| ());
    // The kernel writes back how many it processed, on success or failure.
    let done = (attr[4] & 0xffff_ffff) as u32;
    (done.min(count), r)
}
