/* PROTOTYPE workload for the post-copy experiments (not product code).
 * usage: workload MIB  -- fills MIB MiB with a deterministic pattern, then forever:
 * every 50 ms prints "tick N T_MS", every 2 s re-reads all memory and prints "verify ok|BAD SUM MS". */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>
static double now_ms(void){struct timespec t;clock_gettime(CLOCK_REALTIME,&t);return t.tv_sec*1e3+t.tv_nsec/1e6;}
int main(int argc,char**argv){
  size_t mib=argc>1?strtoul(argv[1],0,10):128, n=mib*1024*1024/8;
  uint64_t *m=malloc(n*8), x=88172645463325252ULL, want=0;
  for(size_t i=0;i<n;i++){x^=x<<13;x^=x>>7;x^=x<<17;m[i]=x;want+=x;}
  setvbuf(stdout,0,_IOLBF,0);
  printf("start pid=%d mib=%zu sum=%llx\n",getpid(),mib,(unsigned long long)want);
  for(long tick=0;;tick++){
    printf("tick %ld %.1f\n",tick,now_ms());
    if(tick%40==0){double t0=now_ms();uint64_t s=0;for(size_t i=0;i<n;i++)s+=m[i];
      printf("verify %s %llx %.1f\n",s==want?"ok":"BAD",(unsigned long long)s,now_ms()-t0);}
    usleep(50000);
  }
}
