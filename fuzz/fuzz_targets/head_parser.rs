#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pyrs_fuzz::head_parser(data));
