# fut_pthread.m4 - find how to compile and link POSIX threads programs.
#
# FUT_CHECK_PTHREAD([ACTION-IF-FOUND], [ACTION-IF-NOT-FOUND])
#
# Tries, in order, the ways a C compiler may want to be told about threads
# and keeps the first that links a program which creates and joins a
# thread and registers a fork handler:
#   -pthread      gcc and clang: defines _REENTRANT when compiling and
#                 pulls in the thread library when linking (preferred,
#                 also what the sanitizers expect);
#   (nothing)     glibc 2.34 and later, musl, the BSDs' libc;
#   -lpthread     older glibc with a compiler that lacks -pthread.
# Sets and AC_SUBSTs PTHREAD_CFLAGS (for compiling) and PTHREAD_LIBS (for
# linking; also what a static link needs, see futures.pc.in).
#
# Written for libfutures; deliberately much smaller than AX_PTHREAD: we
# only build with compilers that understand one of the three forms.
AC_DEFUN([FUT_CHECK_PTHREAD], [
AC_REQUIRE([AC_PROG_CC])
AC_CACHE_CHECK([how to build programs with POSIX threads], [fut_cv_pthread], [
  fut_cv_pthread=no
  fut_save_CFLAGS=$CFLAGS
  fut_save_LIBS=$LIBS
  for fut_flag in -pthread none -lpthread; do
    case $fut_flag in
      -pthread) CFLAGS="$fut_save_CFLAGS -pthread"; LIBS="-pthread $fut_save_LIBS" ;;
      none)     CFLAGS=$fut_save_CFLAGS;            LIBS=$fut_save_LIBS ;;
      -l*)      CFLAGS=$fut_save_CFLAGS;            LIBS="$fut_flag $fut_save_LIBS" ;;
    esac
    AC_LINK_IFELSE([AC_LANG_PROGRAM([[
#include <pthread.h>
static void *run(void *arg) { return arg; }
static void nop(void) { }
]], [[
pthread_t t;
void *ret;
if (pthread_atfork(nop, nop, nop) != 0) return 1;
if (pthread_create(&t, 0, run, 0) != 0) return 1;
return pthread_join(t, &ret);
]])], [fut_cv_pthread=$fut_flag])
    test "x$fut_cv_pthread" != xno && break
  done
  CFLAGS=$fut_save_CFLAGS
  LIBS=$fut_save_LIBS
])
PTHREAD_CFLAGS=
PTHREAD_LIBS=
AS_CASE([$fut_cv_pthread],
  [-pthread], [PTHREAD_CFLAGS=-pthread; PTHREAD_LIBS=-pthread],
  [-l*],      [PTHREAD_LIBS=$fut_cv_pthread])
AC_SUBST([PTHREAD_CFLAGS])
AC_SUBST([PTHREAD_LIBS])
AS_IF([test "x$fut_cv_pthread" != xno], [$1], [$2])
])
