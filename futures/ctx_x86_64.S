/* ctx_x86_64.S - coroutine context switch for x86-64 (System V ABI).
 *
 * DESIGN
 *
 * fut__ctx_jump(from, to, val) is called like any C function, so it needs
 * to keep only what the ABI says a call preserves: rbx, rbp, r12-r15 and
 * rsp.
 * It pushes the six registers on the running stack, stores rsp in
 * from->sp (offset 0 of struct fut__ctx), loads to->sp, pops the six
 * registers that to's own switch pushed, and continues at the address its
 * call left on the stack. The saved frame, from sp upwards:
 *
 *     sp+0  r15   sp+8  r14   sp+16 r13   sp+24 r12
 *     sp+32 rbx   sp+40 rbp   sp+48 resume address
 *
 * The resumed side sees val as the return value of the switch that
 * suspended it (rax), so a caller may end with a tail call of the switch
 * and its caller gets what the resumer computed (coro.c: fut_yield).
 *
 * It returns by pop + indirect jmp, not ret: the return-stack predictor
 * pairs each ret with the last call, and here every return lands at the
 * call site of another context, so ret would mispredict on every switch
 * (~9 ns a pair); the indirect predictor learns the alternation.
 *
 * Not saved: MXCSR and the x87 control word. The ABI makes their control
 * bits callee-saved, but they are the thread's floating-point modes,
 * which no code here changes, and saving them (stmxcsr/fnstcw, restoring
 * with ldmxcsr/fldcw) costs ~6 ns a switch pair against ~5 ns for the
 * rest. Decision: shared by every context of a thread; a coroutine that
 * changes rounding, exception masks or flush-to-zero must restore them
 * before it suspends (documented in coro_ctx.h).
 *
 * A new context (fut__ctx_prepare) gets a frame of that shape at the top
 * of its stack whose resume address is `trampoline`, with entry in r12
 * and arg in r13; the trampoline calls fut__ctx_start(entry, arg) with
 * the stack 16-byte aligned, and is the outermost frame (rbp 0, CFI
 * return address undefined) so debuggers stop unwinding there.
 *
 * No shadow-stack (CET) property note is emitted: this code switches
 * stacks without switching shadow stacks, so a program linking it must
 * not be marked shadow-stack compatible, and is not.
 */
	.text

	.globl	fut__ctx_jump
	.hidden	fut__ctx_jump
	.type	fut__ctx_jump, @function
	.p2align 4
fut__ctx_jump:				/* rdi: from, rsi: to, rdx: val */
	.cfi_startproc
	pushq	%rbp
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %rbp, 0
	pushq	%rbx
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %rbx, 0
	pushq	%r12
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %r12, 0
	pushq	%r13
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %r13, 0
	pushq	%r14
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %r14, 0
	pushq	%r15
	.cfi_adjust_cfa_offset 8
	.cfi_rel_offset %r15, 0

	movq	%rsp, (%rdi)		/* from->sp */
	movq	(%rsi), %rsp		/* to->sp: a frame of the same shape */

	popq	%r15
	.cfi_adjust_cfa_offset -8
	.cfi_restore %r15
	popq	%r14
	.cfi_adjust_cfa_offset -8
	.cfi_restore %r14
	popq	%r13
	.cfi_adjust_cfa_offset -8
	.cfi_restore %r13
	popq	%r12
	.cfi_adjust_cfa_offset -8
	.cfi_restore %r12
	popq	%rbx
	.cfi_adjust_cfa_offset -8
	.cfi_restore %rbx
	popq	%rbp
	.cfi_adjust_cfa_offset -8
	.cfi_restore %rbp
	popq	%rcx			/* resume address */
	.cfi_adjust_cfa_offset -8
	.cfi_register %rip, %rcx
	movq	%rdx, %rax		/* what the resumed switch returns */
	jmpq	*%rcx
	.cfi_endproc
	.size	fut__ctx_jump, .-fut__ctx_jump

/* int fut__ctx_jump_int(from, to): the same routine (coro_ctx.h). */
	.globl	fut__ctx_jump_int
	.hidden	fut__ctx_jump_int
	.type	fut__ctx_jump_int, @function
	.set	fut__ctx_jump_int, fut__ctx_jump

/* int fut__ctx_prepare(struct fut__ctx *c, void *stack_base, size_t size,
 *                      void (*entry)(void *), void *arg) */
	.globl	fut__ctx_prepare
	.hidden	fut__ctx_prepare
	.type	fut__ctx_prepare, @function
	.p2align 4
fut__ctx_prepare:			/* rdi c, rsi base, rdx size, rcx entry, r8 arg */
	.cfi_startproc
	leaq	(%rsi,%rdx), %rax
	andq	$-16, %rax		/* top, 16-byte aligned */
	leaq	trampoline(%rip), %r9
	movq	%r9, -8(%rax)		/* resume address */
	movq	$0, -16(%rax)		/* rbp: ends the frame-pointer chain */
	movq	$0, -24(%rax)		/* rbx */
	movq	%rcx, -32(%rax)		/* r12: entry */
	movq	%r8, -40(%rax)		/* r13: arg */
	movq	$0, -48(%rax)		/* r14 */
	movq	$0, -56(%rax)		/* r15 */
	subq	$56, %rax
	movq	%rax, (%rdi)		/* c->sp */
	xorl	%eax, %eax
	ret
	.cfi_endproc
	.size	fut__ctx_prepare, .-fut__ctx_prepare

/* The first code of a new context; rsp is the 16-byte aligned top. */
	.type	trampoline, @function
	.p2align 4
trampoline:
	.cfi_startproc
	.cfi_undefined %rip		/* outermost frame */
	movq	%r12, %rdi		/* entry */
	movq	%r13, %rsi		/* arg */
	call	fut__ctx_start		/* never returns */
	ud2
	.cfi_endproc
	.size	trampoline, .-trampoline

	.section .note.GNU-stack,"",@progbits
