//! wasm-bindgen tests in Node: `cargo test --release --target wasm32-unknown-unknown --no-default-features --test wasm_node`
#![cfg(target_arch = "wasm32")]

mod wasm_common;

use wasm_bindgen_test::wasm_bindgen_test;

#[wasm_bindgen_test]
fn simd128_enabled() {
    wasm_common::simd128_is_on();
}

#[wasm_bindgen_test]
fn reference_parity_in_node() {
    wasm_common::matches_reference();
}

#[wasm_bindgen_test]
fn verdicts_in_node() {
    wasm_common::clear_cases();
}
