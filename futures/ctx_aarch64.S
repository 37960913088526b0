/* ctx_aarch64.S - coroutine context switch for AArch64 (AAPCS64).
 *
 * DESIGN
 *
 * fut__ctx_jump(from, to, val) is called like any C function, so it keeps what
 * AAPCS64 says a call preserves: x19-x28, the frame pointer x29, the link
 * register x30 (where to resume), sp, and the low 64 bits of v8-v15
 * (d8-d15). It stores them in a 160-byte frame on the running stack,
 * stores sp in from->sp (offset 0 of struct fut__ctx), loads to->sp,
 * reloads to's frame and branches to its x30 with val in x0 (what the
 * resumed switch returns). The saved frame, from sp
 * upwards:
 *
 *     sp+0   x19 x20   sp+16  x21 x22   sp+32  x23 x24   sp+48  x25 x26
 *     sp+64  x27 x28   sp+80  x29 x30   sp+96  d8 d9     sp+112 d10 d11
 *     sp+128 d12 d13   sp+144 d14 d15
 *
 * It leaves by `br x30`, not `ret`: ret pops the return-address
 * predictor, which pairs it with the last bl, and every switch lands at
 * another context's call site, so ret would mispredict each time. (A
 * program built with BTI enforcement would need landing pads at those
 * sites; this file emits no BTI property note, so such a program is not
 * marked BTI and the branch is allowed.)
 *
 * Not saved: FPCR and FPSR (rounding mode, flush-to-zero, exception
 * flags). They are the thread's floating-point modes, shared by every
 * context on it; a coroutine that changes them must restore them before
 * it suspends (coro_ctx.h), as on x86-64.
 *
 * A new context (fut__ctx_prepare) gets a frame of that shape at the top
 * of its stack with x30 = trampoline, x19 = entry, x20 = arg, x29 = 0;
 * the trampoline calls fut__ctx_start(entry, arg) with sp 16-byte aligned
 * and is the outermost frame (CFI return address undefined).
 */
	.text

	.globl	fut__ctx_jump
	.hidden	fut__ctx_jump
	.type	fut__ctx_jump, %function
	.p2align 4
fut__ctx_jump:				/* x0: from, x1: to, x2: val */
	.cfi_startproc
	sub	sp, sp, #160
	.cfi_def_cfa_offset 160
	stp	x19, x20, [sp, #0]
	stp	x21, x22, [sp, #16]
	stp	x23, x24, [sp, #32]
	stp	x25, x26, [sp, #48]
	stp	x27, x28, [sp, #64]
	stp	x29, x30, [sp, #80]
	stp	d8, d9, [sp, #96]
	stp	d10, d11, [sp, #112]
	stp	d12, d13, [sp, #128]
	stp	d14, d15, [sp, #144]
	.cfi_offset x19, -160
	.cfi_offset x20, -152
	.cfi_offset x21, -144
	.cfi_offset x22, -136
	.cfi_offset x23, -128
	.cfi_offset x24, -120
	.cfi_offset x25, -112
	.cfi_offset x26, -104
	.cfi_offset x27, -96
	.cfi_offset x28, -88
	.cfi_offset x29, -80
	.cfi_offset x30, -72
	.cfi_offset d8, -64
	.cfi_offset d9, -56
	.cfi_offset d10, -48
	.cfi_offset d11, -40
	.cfi_offset d12, -32
	.cfi_offset d13, -24
	.cfi_offset d14, -16
	.cfi_offset d15, -8

	mov	x9, sp
	str	x9, [x0]		/* from->sp */
	ldr	x9, [x1]		/* to->sp: a frame of the same shape */
	mov	sp, x9

	ldp	x19, x20, [sp, #0]
	ldp	x21, x22, [sp, #16]
	ldp	x23, x24, [sp, #32]
	ldp	x25, x26, [sp, #48]
	ldp	x27, x28, [sp, #64]
	ldp	x29, x30, [sp, #80]
	ldp	d8, d9, [sp, #96]
	ldp	d10, d11, [sp, #112]
	ldp	d12, d13, [sp, #128]
	ldp	d14, d15, [sp, #144]
	add	sp, sp, #160
	.cfi_def_cfa_offset 0
	.cfi_restore x19
	.cfi_restore x20
	.cfi_restore x21
	.cfi_restore x22
	.cfi_restore x23
	.cfi_restore x24
	.cfi_restore x25
	.cfi_restore x26
	.cfi_restore x27
	.cfi_restore x28
	.cfi_restore x29
	.cfi_restore x30
	.cfi_restore d8
	.cfi_restore d9
	.cfi_restore d10
	.cfi_restore d11
	.cfi_restore d12
	.cfi_restore d13
	.cfi_restore d14
	.cfi_restore d15
	mov	x0, x2			/* what the resumed switch returns */
	br	x30
	.cfi_endproc
	.size	fut__ctx_jump, .-fut__ctx_jump

/* int fut__ctx_jump_int(from, to): the same routine (coro_ctx.h). */
	.globl	fut__ctx_jump_int
	.hidden	fut__ctx_jump_int
	.type	fut__ctx_jump_int, %function
	.set	fut__ctx_jump_int, fut__ctx_jump

/* int fut__ctx_prepare(struct fut__ctx *c, void *stack_base, size_t size,
 *                      void (*entry)(void *), void *arg) */
	.globl	fut__ctx_prepare
	.hidden	fut__ctx_prepare
	.type	fut__ctx_prepare, %function
	.p2align 4
fut__ctx_prepare:			/* x0 c, x1 base, x2 size, x3 entry, x4 arg */
	.cfi_startproc
	add	x9, x1, x2
	and	x9, x9, #~15		/* top, 16-byte aligned */
	sub	x9, x9, #160
	stp	x3, x4, [x9, #0]	/* x19 entry, x20 arg */
	stp	xzr, xzr, [x9, #16]
	stp	xzr, xzr, [x9, #32]
	stp	xzr, xzr, [x9, #48]
	stp	xzr, xzr, [x9, #64]
	adr	x10, trampoline
	stp	xzr, x10, [x9, #80]	/* x29 0: ends the frame chain; x30 */
	stp	xzr, xzr, [x9, #96]
	stp	xzr, xzr, [x9, #112]
	stp	xzr, xzr, [x9, #128]
	stp	xzr, xzr, [x9, #144]
	str	x9, [x0]		/* c->sp */
	mov	w0, #0
	ret
	.cfi_endproc
	.size	fut__ctx_prepare, .-fut__ctx_prepare

/* The first code of a new context; sp is the 16-byte aligned top. */
	.type	trampoline, %function
	.p2align 4
trampoline:
	.cfi_startproc
	.cfi_undefined x30		/* outermost frame */
	mov	x0, x19			/* entry */
	mov	x1, x20			/* arg */
	bl	fut__ctx_start		/* never returns */
	brk	#1000
	.cfi_endproc
	.size	trampoline, .-trampoline

	.section .note.GNU-stack,"",%progbits
