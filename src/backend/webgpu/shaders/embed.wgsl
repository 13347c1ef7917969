// Embedding gather: x[t] = word[id_t] + position[pos_t] + token_type[0], one invocation per element.
// The word table stays in its GGUF encoding (raw bytes packed into u32 words, blocks not 4-aligned), decoded here.
// Reusable as-is for the decoder's token embedding (no position table: pass has_pos = 0).

struct Params {
    tokens: u32,
    hidden: u32,
    fmt: u32,        // 0 = Q4_0, 1 = Q8_0, 2 = F16, 3 = F32
    seqs: u32,       // meta layout: starts[seqs + 1] | seq_of_token[tokens] | ids[tokens]
    pos_off: u32,    // offset of the position table in `tables`
    type_off: u32,   // offset of the token-type-0 row in `tables`
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> seq_info: array<u32>;
@group(0) @binding(2) var<storage, read> word: array<u32>;
@group(0) @binding(3) var<storage, read> tables: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

fn byte_at(i: u32) -> u32 {
    return (word[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu;
}

fn f16_at(i: u32) -> f32 {
    return unpack2x16float(byte_at(i) | (byte_at(i + 1u) << 8u)).x;
}

// Element `e` of the flattened table; ggml blocks run over the flattened tensor.
fn word_value(e: u32) -> f32 {
    switch p.fmt {
        case 0u: { // Q4_0: f16 d + 16 bytes; element i < 16 in the low nibble of byte i, i >= 16 in the high one
            let base = (e / 32u) * 18u;
            let i = e % 32u;
            let q = byte_at(base + 2u + (i % 16u));
            let nib = select(q >> 4u, q & 0xfu, i < 16u);
            return (f32(nib) - 8.0) * f16_at(base);
        }
        case 1u: { // Q8_0: f16 d + 32 signed bytes
            let base = (e / 32u) * 34u;
            let q = bitcast<i32>(byte_at(base + 2u + e % 32u) << 24u) >> 24u;
            return f32(q) * f16_at(base);
        }
        case 2u: { return f16_at(e * 2u); }
        default: { return bitcast<f32>(word[e]); }
    }
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.y * nwg.x * 64u + gid.x;
    if idx >= p.tokens * p.hidden {
        return;
    }
    let t = idx / p.hidden;
    let d = idx % p.hidden;
    let seq = seq_info[p.seqs + 1u + t];
    let pos = t - seq_info[seq];
    let id = seq_info[p.seqs + 1u + p.tokens + t];
    out[idx] = word_value(id * p.hidden + d) + tables[p.pos_off + pos * p.hidden + d] + tables[p.type_off + d];
}
