import csv,math,os
def load(p, model=None):
    r=list(csv.DictReader(open(p)))
    if model: r=[x for x in r if x['model']==model]; k=('dice_wt','dice_tc','dice_et')
    else: k=('Dice_WT','Dice_TC','Dice_ET')
    return {x['case']:sum(float(x[j]) for j in k)/3 for x in r}
def mean(d): return sum(d.values())/len(d)
def pair(a,b):
    cs=sorted(a); d=[a[c]-b[c] for c in cs]; n=len(d); m=sum(d)/n; se=math.sqrt(sum((x-m)**2 for x in d)/(n-1)/n)
    v='beats' if m>2*se else 'worse' if m<-2*se else 'tie'
    return f"{m:+.3f} ± {se:.3f} ({v}), better on {sum(x>0 for x in d)} of {n}"
for s in (1,2,3):
    D=f'/tmp/s6/C-s{s}'; R=D+'/results.csv'
    T={m:load(R,m) for m in ('unet3d','cascade','resnext-se','ensemble','student-oracle')}
    B=[load(R,'student-baseline')]+[load(f'{D}/v/base-{k}.csv') for k in (101,102)]
    Dd=[load(R,'student-distilled')]+[load(f'{D}/v/dist-{k}.csv') for k in (101,102)]
    cs=sorted(B[0]); mb={c:sum(b[c] for b in B)/3 for c in cs}; md={c:sum(b[c] for b in Dd)/3 for c in cs}
    print(f"seed {s}: " + ", ".join(f"{m} {mean(t):.3f}" for m,t in T.items()))
    print(f"  baseline runs {' / '.join(f'{mean(b):.3f}' for b in B)} mean {mean(mb):.3f}; distilled runs {' / '.join(f'{mean(b):.3f}' for b in Dd)} mean {mean(md):.3f}")
    print(f"  dist-base {pair(md,mb)}")
    for m in ('unet3d','cascade','resnext-se','ensemble'): print(f"  dist-{m} {pair(md,T[m])}")
    print(f"  oracle-base {pair(T['student-oracle'],mb)}")
    print(f"  single run: dist-base {pair(Dd[0],B[0])}")
