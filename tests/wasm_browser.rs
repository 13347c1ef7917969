//! wasm-bindgen tests in headless Chromium (chromedriver):
//! `CHROMEDRIVER=/usr/bin/chromedriver cargo test --release --target wasm32-unknown-unknown --no-default-features --test wasm_browser`
#![cfg(target_arch = "wasm32")]

mod wasm_common;

use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
fn simd128_enabled() {
    wasm_common::simd128_is_on();
}

#[wasm_bindgen_test]
fn reference_parity_in_chromium() {
    wasm_common::matches_reference();
}

#[wasm_bindgen_test]
fn verdicts_in_chromium() {
    wasm_common::clear_cases();
}
