//! Montgomery arithmetic for the RSA public operation, on 32-bit limbs.
//!
//! Why not `crypto-bigint` here: its limb size is chosen build-wide (`cpubits`), and
//! wasm32 gets 64-bit limbs, whose 64×64→128 products wasm has to emulate with four
//! 32-bit multiplies and carry juggling. 32-bit limbs map each limb product to one
//! `i64.mul`, which V8 compiles to one native multiply. The public operation works on
//! public data only (signature, modulus, exponent), so the code is variable-time on
//! purpose: a final subtraction only when needed, an early exit in comparisons, and a
//! squaring that computes each cross product once.
//!
//! Limbs are little-endian (`x[0]` least significant). A modulus of `L` limbs has
//! `R = 2^(32·L)`.

/// A modulus with its Montgomery constants, computed once per key.
#[derive(Clone)]
pub(crate) struct Modulus {
    n: Vec<u32>,
    /// −n⁻¹ mod 2³².
    n0: u32,
    /// R² mod n, to move a value into Montgomery form.
    r2: Vec<u32>,
}

/// Little-endian 32-bit limbs of a big-endian byte string, exactly `limbs` long; None
/// when the value needs more limbs.
pub(crate) fn limbs_from_be(bytes: &[u8], limbs: usize) -> Option<Vec<u32>> {
    let mut out = vec![0u32; limbs];
    let mut slots = out.iter_mut();
    for chunk in bytes.rchunks(4) {
        let mut word = 0u32;
        for &b in chunk {
            word = (word << 8) | u32::from(b);
        }
        match slots.next() {
            Some(slot) => *slot = word,
            None if word == 0 => {}
            None => return None,
        }
    }
    Some(out)
}

/// Big-endian bytes of little-endian limbs, exactly `len` bytes (the value must fit).
pub(crate) fn limbs_to_be(x: &[u32], len: usize) -> Option<Vec<u8>> {
    let mut le: Vec<u8> = x.iter().flat_map(|w| w.to_le_bytes()).collect();
    if le.iter().skip(len).any(|&b| b != 0) {
        return None;
    }
    le.resize(len, 0);
    le.reverse();
    Some(le)
}

/// `a.cmp(b)` for equal-length little-endian numbers.
fn cmp(a: &[u32], b: &[u32]) -> core::cmp::Ordering {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x.cmp(y);
        }
    }
    core::cmp::Ordering::Equal
}

/// `a -= b` modulo 2^(32·len); the caller knows whether it wraps.
fn sub_assign(a: &mut [u32], b: &[u32]) {
    let mut borrow = 0u64;
    for (x, &y) in a.iter_mut().zip(b) {
        let d = u64::from(*x)
            .wrapping_sub(u64::from(y))
            .wrapping_sub(borrow);
        *x = d as u32;
        borrow = (d >> 63) & 1;
    }
}

/// `x` with limb count `n.len()`: `a < n` as numbers.
pub(crate) fn less_than(a: &[u32], n: &[u32]) -> bool {
    a.len() == n.len() && cmp(a, n) == core::cmp::Ordering::Less
}

impl Modulus {
    /// None unless `n` is odd and greater than 1.
    pub(crate) fn new(n: Vec<u32>) -> Option<Modulus> {
        let low = *n.first()?;
        if low & 1 == 0 || n.iter().skip(1).all(|&x| x == 0) && low < 3 {
            return None;
        }
        // Newton's iteration for n⁻¹ mod 2³²: each step doubles the correct bits
        // (low·low ≡ 1 mod 8 for odd low, so 3 correct bits to start).
        let mut inv = low;
        for _ in 0..5 {
            inv = inv.wrapping_mul(2u32.wrapping_sub(low.wrapping_mul(inv)));
        }
        let n0 = inv.wrapping_neg();
        // R² mod n: one long division (crypto-bigint's, variable-time in n, which is
        // public), once per key.
        let r2 = {
            use crypto_bigint::{BoxedUint, NonZero};
            let wide = u32::try_from(64 * n.len()).ok()?;
            let be: Vec<u8> = n.iter().rev().flat_map(|w| w.to_be_bytes()).collect();
            let divisor: Option<NonZero<BoxedUint>> =
                NonZero::new(BoxedUint::from_be_slice_vartime(&be)).into();
            let r_squared = BoxedUint::one_with_precision(wide + 64).shl_vartime(wide)?;
            let rem = r_squared.rem_vartime(&divisor?);
            limbs_from_be(&rem.to_be_bytes(), n.len())?
        };
        Some(Modulus { n, n0, r2 })
    }

    pub(crate) fn limbs(&self) -> &[u32] {
        &self.n
    }

    /// `base^e mod n` for `base < n`, `e_rest` the exponent's bits below its top bit,
    /// most significant first.
    pub(crate) fn pow(&self, base: &[u32], e_rest: &[bool]) -> Vec<u32> {
        let len = self.n.len();
        let mut scratch = Scratch::new(len);
        let mut b = vec![0u32; len];
        self.mul(base, &self.r2, &mut b, &mut scratch);
        let mut acc = b.clone();
        let mut tmp = vec![0u32; len];
        for &bit in e_rest {
            self.square(&acc, &mut tmp, &mut scratch);
            core::mem::swap(&mut acc, &mut tmp);
            if bit {
                self.mul(&acc, &b, &mut tmp, &mut scratch);
                core::mem::swap(&mut acc, &mut tmp);
            }
        }
        // Out of Montgomery form: multiply by 1.
        let mut one = vec![0u32; len];
        if let Some(first) = one.first_mut() {
            *first = 1;
        }
        self.mul(&acc, &one, &mut tmp, &mut scratch);
        tmp
    }

    /// `out = a·b·R⁻¹ mod n` (CIOS, Koç et al. 1996), for `a, b < n`.
    fn mul(&self, a: &[u32], b: &[u32], out: &mut [u32], s: &mut Scratch) {
        let t = &mut s.t;
        t.iter_mut().for_each(|x| *x = 0);
        // t has L + 2 limbs: t[L], t[L+1] are the running top words.
        let mut hi0 = 0u32;
        for &bi in b {
            let bi = u64::from(bi);
            // t += a·bi
            let mut c = 0u64;
            for (tj, &aj) in t.iter_mut().zip(a) {
                let v = u64::from(*tj) + u64::from(aj) * bi + c;
                *tj = v as u32;
                c = v >> 32;
            }
            let v = u64::from(hi0) + c;
            hi0 = v as u32;
            let hi1 = (v >> 32) as u32;
            self.reduce_step(t, &mut hi0, hi1);
        }
        self.finish(t, hi0, out);
    }

    /// One word of Montgomery reduction: `t = (t + m·n) / 2³²` with `m` chosen so the
    /// low word vanishes. `hi0` is the word above `t`, `hi1` the one above that.
    #[inline(always)]
    fn reduce_step(&self, t: &mut [u32], hi0: &mut u32, hi1: u32) {
        let Some(&t0) = t.first() else { return };
        let m = u64::from(t0.wrapping_mul(self.n0));
        let Some((&n0, n_rest)) = self.n.split_first() else {
            return;
        };
        let mut c = (u64::from(t0) + m * u64::from(n0)) >> 32;
        // Shift down by one limb while adding m·n: t[j-1] = t[j] + m·n[j] + carry.
        let cells = core::cell::Cell::from_mut(t).as_slice_of_cells();
        for ((dst, src), &nj) in cells.iter().zip(cells.iter().skip(1)).zip(n_rest) {
            let v = u64::from(src.get()) + m * u64::from(nj) + c;
            dst.set(v as u32);
            c = v >> 32;
        }
        let v = u64::from(*hi0) + c;
        if let Some(last) = cells.last() {
            last.set(v as u32);
        }
        *hi0 = hi1.wrapping_add((v >> 32) as u32);
    }

    /// `out = t mod n` for `t < 2n` given with its top word.
    fn finish(&self, t: &[u32], hi: u32, out: &mut [u32]) {
        out.copy_from_slice(t);
        if hi != 0 || cmp(out, &self.n) != core::cmp::Ordering::Less {
            sub_assign(out, &self.n);
        }
    }

    /// `out = a²·R⁻¹ mod n`: the product with each cross term computed once and
    /// doubled, then a separate Montgomery reduction (SOS).
    fn square(&self, a: &[u32], out: &mut [u32], s: &mut Scratch) {
        let w = &mut s.wide;
        w.iter_mut().for_each(|x| *x = 0);
        // Cross products a[i]·a[j], i < j, into w[i+j].
        let mut rest = a;
        let mut row = 0usize;
        while let Some((&ai, tail)) = rest.split_first() {
            let ai = u64::from(ai);
            let mut c = 0u64;
            let dst = w.iter_mut().skip(2 * row + 1);
            let mut dst = dst.zip(tail);
            for (wk, &aj) in &mut dst {
                let v = u64::from(*wk) + ai * u64::from(aj) + c;
                *wk = v as u32;
                c = v >> 32;
            }
            if let Some(wk) = w.get_mut(row + a.len()) {
                *wk = c as u32;
            }
            rest = tail;
            row += 1;
        }
        // Double, then add the squares a[i]² at w[2i].
        let mut carry = 0u32;
        for x in w.iter_mut() {
            let top = *x >> 31;
            *x = (*x << 1) | carry;
            carry = top;
        }
        let mut c = 0u64;
        for (pair, &ai) in w.chunks_exact_mut(2).zip(a) {
            let sq = u64::from(ai) * u64::from(ai);
            if let [lo, hi] = pair {
                let v = u64::from(*lo) + (sq & 0xffff_ffff) + c;
                *lo = v as u32;
                let v = u64::from(*hi) + (sq >> 32) + (v >> 32);
                *hi = v as u32;
                c = v >> 32;
            }
        }
        // Montgomery reduction of the 2L-limb w, one word at a time (SOS): after
        // step i, w[i] is zero and the carry goes into w[i + L].
        let len = a.len();
        let mut top = 0u64; // carry above w[i + L] from earlier steps
        for i in 0..len {
            let Some(window) = w.get_mut(i..) else { return };
            let Some(&wi) = window.first() else { return };
            let m = u64::from(wi.wrapping_mul(self.n0));
            let mut c = 0u64;
            for (wk, &nk) in window.iter_mut().zip(&self.n) {
                let v = u64::from(*wk) + m * u64::from(nk) + c;
                *wk = v as u32;
                c = v >> 32;
            }
            if let Some(wk) = window.get_mut(len) {
                let v = u64::from(*wk) + c + top;
                *wk = v as u32;
                top = v >> 32;
            }
        }
        let hi = w.get(len..).unwrap_or_default();
        out.copy_from_slice(hi);
        if top != 0 || cmp(out, &self.n) != core::cmp::Ordering::Less {
            sub_assign(out, &self.n);
        }
    }
}

struct Scratch {
    t: Vec<u32>,
    wide: Vec<u32>,
}

impl Scratch {
    fn new(len: usize) -> Scratch {
        Scratch {
            t: vec![0; len],
            wide: vec![0; 2 * len],
        }
    }
}
