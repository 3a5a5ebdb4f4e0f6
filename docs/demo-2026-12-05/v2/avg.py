# avg.py RUN : per-case mean Dice over student seeds (1 = demo's, 101, 102) for base and dist; paired
import csv,sys,math,os
D=sys.argv[1]; tag=sys.argv[2] if len(sys.argv)>2 else ''
def load(p, model=None):
    r=list(csv.DictReader(open(p)))
    if model: r=[x for x in r if x['model']==model]; k=('dice_wt','dice_tc','dice_et')
    else: k=('Dice_WT','Dice_TC','Dice_ET')
    return {x['case']:sum(float(x[j]) for j in k)/3 for x in r}
B=[load(D+'/results.csv','student-baseline')]+[load(f'{D}/v/base-{s}.csv') for s in (101,102) if os.path.exists(f'{D}/v/base-{s}.csv')]
Dd=[load(D+'/results.csv','student-distilled')]+[load(f'{D}/v/dist{tag}-{s}.csv') for s in (101,102) if os.path.exists(f'{D}/v/dist{tag}-{s}.csv')]
T={m:load(D+'/results.csv',m) for m in ('unet3d','cascade','resnext-se','ensemble')}
cases=sorted(B[0])
mb={c:sum(b[c] for b in B)/len(B) for c in cases}; md={c:sum(d[c] for d in Dd)/len(Dd) for c in cases}
def pair(a,b,la,lb):
    d=[a[c]-b[c] for c in cases]; n=len(d); m=sum(d)/n; se=math.sqrt(sum((x-m)**2 for x in d)/(n-1)/n)
    print(f"  {la} - {lb}: {m:+.3f} ± {se:.3f} ({'beats' if m>2*se else 'worse' if m<-2*se else 'tie'}), better on {sum(x>0 for x in d)} of {n}")
print(D, 'runs base', len(B), 'dist', len(Dd))
print('  base per run', ' '.join(f"{sum(b.values())/len(b):.3f}" for b in B), 'mean', f"{sum(mb.values())/len(mb):.3f}")
print('  dist per run', ' '.join(f"{sum(b.values())/len(b):.3f}" for b in Dd), 'mean', f"{sum(md.values())/len(md):.3f}")
pair(md,mb,'dist(mean)','base(mean)')
for m,t in T.items(): pair(md,t,'dist(mean)',m)
