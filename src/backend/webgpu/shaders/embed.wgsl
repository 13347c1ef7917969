// Embedding gather: x[t] = word[id_t] + position[pos_t] + token_type[0], one invocation per element.
// The word table stays in its GGUF encoding (raw bytes packed into u32 words, blocks not 4-aligned), decoded here.
// fmt 4 is the decoder's tied embedding as matmul_q8.wgsl stores it (so one copy serves the gather and the head):
// int8 values 4 per u32 in `word`, one f32 scale per 32-element block in `tables`; the row is multiplied by `scale`
// (Gemma's sqrt(hidden)) and nothing is added.

struct Params {
    tokens: u32,
    hidden: u32,
    fmt: u32,        // 0 = Q4_0, 1 = Q8_0, 2 = F16, 3 = F32, 4 = repacked Q8_0 (decoder)
    seqs: u32,       // meta layout: starts[seqs + 1] | seq_of_token[tokens] | ids[tokens]
    pos_off: u32,    // offset of the position table in `tables`
    type_off: u32,   // offset of the token-type-0 row in `tables`
    scale: f32,      // fmt 4 only
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
        case 4u: {
            let q = bitcast<i32>(word[e >> 2u] << (24u - 8u * (e & 3u))) >> 24u;
            return f32(q) * tables[e / 32u];
        }
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
    let id = seq_info[p.seqs + 1u + p.tokens + t];
    if p.fmt == 4u {
        out[idx] = word_value(id * p.hidden + d) * p.scale;
        return;
    }
    let seq = seq_info[p.seqs + 1u + t];
    let pos = t - seq_info[seq];
    out[idx] = word_value(id * p.hidden + d) + tables[p.pos_off + pos * p.hidden + d] + tables[p.type_off + d];
}
