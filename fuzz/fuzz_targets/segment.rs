#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(
    // The segment reader contains panics raised inside Arrow's IPC decoder
    // (turning them into corruption errors), so the panic hook libfuzzer-sys
    // installs, which aborts before unwinding, would report contained panics
    // as crashes. A panic that escapes the reader still aborts: the harness
    // catches the unwind and calls abort().
    init: std::panic::set_hook(Box::new(|_| {})),
    |data: &[u8]| targets::segment(data)
);
