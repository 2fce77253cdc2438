// The kernel's own cost of a jail: a plain spawn (fork-like clone, execve of /bin/true,
// waitpid) against a jailed one (new pid, mount, ipc and uts namespaces; the rootfs bound,
// /proc and a tmpfs /dev mounted, pivot_root, the old root detached; setresuid/gid 65534;
// no_new_privs; a seccomp filter of L instructions: L-1 compares that never match, then
// "allow"), N of each, alternating; prints the medians and their ratio. No cgroup, no
// bookkeeping: what any jail implementation pays at least.
//
//   gcc -O2 -o jail_floor jail_floor.c && ./jail_floor ROOTFS N L     (as root)
//
// ROOTFS needs /bin/true (a static busybox and a `true` link), /proc and /dev directories,
// and must be searchable by uid 65534.
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <signal.h>
#include <time.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
static const char *rootfs; static int ninsn;
static struct sock_filter *prog;
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e6+t.tv_nsec/1e3;}
static void die(const char*w){perror(w);_exit(127);}
static int jailed_child(void){
  if(mount(NULL,"/",NULL,MS_REC|MS_PRIVATE,NULL))die("private");
  if(mount(rootfs,rootfs,NULL,MS_BIND|MS_REC,NULL))die("bind");
  if(chdir(rootfs))die("chdir");
  if(mount("proc","proc","proc",MS_NOSUID|MS_NODEV|MS_NOEXEC,NULL))die("proc");
  if(mount("tmpfs","dev","tmpfs",MS_NOSUID,"mode=755"))die("dev");
  if(syscall(SYS_pivot_root,".","."))die("pivot");
  if(umount2(".",MNT_DETACH))die("umount");
  if(chdir("/"))die("chdir2");
  if(setresgid(65534,65534,65534)||setresuid(65534,65534,65534))die("ids");
  if(prctl(PR_SET_NO_NEW_PRIVS,1,0,0,0))die("nnp");
  if(ninsn){struct sock_fprog f={.len=ninsn,.filter=prog}; if(syscall(SYS_seccomp,SECCOMP_SET_MODE_FILTER,0,&f))die("seccomp");}
  char*argv[]={"/bin/true",NULL}; execve("/bin/true",argv,environ); die("exec");return 0;
}
static double one(int jailed){
  double t0=now(); int flags=SIGCHLD; if(jailed)flags|=CLONE_NEWPID|CLONE_NEWNS|CLONE_NEWIPC|CLONE_NEWUTS;
  pid_t p=syscall(SYS_clone,flags,0,0,0,0);
  if(p==0){ if(jailed)jailed_child(); char*argv[]={"/bin/true",NULL}; execve("/bin/true",argv,environ); _exit(127);}
  int st; waitpid(p,&st,0); if(!WIFEXITED(st)||WEXITSTATUS(st)){fprintf(stderr,"child failed %d\n",st);exit(1);}
  return now()-t0;
}
static int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(int c,char**v){
  rootfs=v[1]; int n=atoi(v[2]); ninsn=atoi(v[3]);
  prog=calloc(ninsn+1,sizeof *prog);
  // L-1 never-taken compares, then allow: the size of paddock's default profile.
  for(int i=0;i+1<ninsn;i++) prog[i]=(struct sock_filter)BPF_JUMP(BPF_JMP|BPF_JEQ|BPF_K,0xffffff,0,0);
  if(ninsn) prog[ninsn-1]=(struct sock_filter)BPF_STMT(BPF_RET|BPF_K,SECCOMP_RET_ALLOW);
  double *a=calloc(n,8),*b=calloc(n,8);
  for(int i=0;i<n;i++){a[i]=one(0);b[i]=one(1);}
  qsort(a,n,8,cmp);qsort(b,n,8,cmp);
  printf("plain %.0f us, jailed %.0f us (seccomp %d insns), ratio %.2f\n",a[n/2],b[n/2],ninsn,b[n/2]/a[n/2]);
}
