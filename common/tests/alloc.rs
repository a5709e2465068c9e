//! `common::alloc::reuse_freed_memory`: after it, glibc serves buffers of any size from
//! its heap (reused after free) instead of fresh `mmap`s. Its own test binary, so that no
//! other test has moved glibc's dynamic mmap threshold first.

/// Whether glibc gave `buf` its own `mmap`: bit 1 (`IS_MMAPPED`) of the chunk header's
/// size word, the `usize` just before the pointer malloc returned (glibc's chunk layout,
/// unchanged since glibc 2.0).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn is_mmapped(buf: &[u8]) -> bool {
    // SAFETY: `buf` is a live allocation of the global allocator (the system allocator,
    // glibc's malloc, since this binary sets none); glibc keeps the chunk's size word in
    // the 8 bytes before it, readable while the allocation lives.
    // black_box: the optimiser may not reason about a read outside the allocation (a
    // release build otherwise drops the vector's malloc).
    let start = std::hint::black_box(buf.as_ptr());
    let size_word = unsafe { std::ptr::read(start.cast::<usize>().sub(1)) };
    size_word & 2 != 0
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn buffers_of_a_few_mib_come_from_the_heap_once_tuned() {
    // Control: with glibc's defaults (threshold 128 KiB, and nothing mmapped freed yet, so
    // it has not grown) a 16 MiB buffer is mmapped. Kept alive so that no free moves the
    // threshold before the check below.
    let before = vec![1u8; 16 << 20];
    assert!(
        is_mmapped(&before),
        "control failed: 16 MiB was not mmapped with glibc's defaults"
    );
    if std::env::var(common::alloc::KEEP_DEFAULTS_ENV).is_ok_and(|v| v != "0") {
        assert!(!common::alloc::reuse_freed_memory());
        println!("skipped: {} is set", common::alloc::KEEP_DEFAULTS_ENV);
        return;
    }
    assert!(
        common::alloc::reuse_freed_memory(),
        "glibc refused the tuning"
    );
    // Larger than any freed chunk: now from the heap.
    let after = vec![1u8; 20 << 20];
    assert!(!is_mmapped(&after), "20 MiB still mmapped after tuning");
    // Above glibc's largest threshold (32 MiB), too: mmap is off. (Kept below the 64 MiB
    // of a thread arena's heap: this test runs on a thread of the test harness, where
    // glibc still mmaps a buffer too large for that heap.)
    let huge = vec![1u8; 48 << 20];
    assert!(!is_mmapped(&huge), "48 MiB still mmapped after tuning");
    // Calling again changes nothing and answers the same.
    assert!(common::alloc::reuse_freed_memory());
    drop((before, after, huge));
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
#[test]
fn nothing_to_tune_outside_glibc() {
    assert!(!common::alloc::reuse_freed_memory());
}
