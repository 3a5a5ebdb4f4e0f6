# avg.py DIR PREFIX SEED : per-case mean Dice over the 3 student runs (w/PREFIX-{base,dist}-{SEED,101,102}.csv); paired
import csv,sys,math,os
D,P,S=sys.argv[1],sys.argv[2],sys.argv[3]
def load(p, model=None):
    r=list(csv.DictReader(open(p)))
    if model: r=[x for x in r if x['model']==model]; k=('dice_wt','dice_tc','dice_et')
    else: k=('Dice_WT','Dice_TC','Dice_ET')
    return {x['case']:sum(float(x[j]) for j in k)/3 for x in r}
def runs(kind):
    return [load(f'{D}/w/{P}-{kind}-{s}.csv') for s in (S,'101','102') if os.path.exists(f'{D}/w/{P}-{kind}-{s}.csv')]
B=runs('base') or [load(D+'/results.csv',m) for m in ('student-baseline','student-baseline-2','student-baseline-3')]; Dd=runs('dist')
T={m:load(D+'/results.csv',m) for m in ('unet3d','cascade','resnext-se','ensemble','student-baseline-mean','student-distilled-mean')}
cases=sorted(T['ensemble'])
mb={c:sum(b[c] for b in B)/len(B) for c in cases}; md={c:sum(d[c] for d in Dd)/len(Dd) for c in cases}
def pair(a,b,la,lb):
    d=[a[c]-b[c] for c in cases]; n=len(d); m=sum(d)/n; se=math.sqrt(sum((x-m)**2 for x in d)/(n-1)/n)
    print(f"  {la} - {lb}: {m:+.3f} ± {se:.3f} ({'beats' if m>2*se else 'worse' if m<-2*se else 'tie'}), better on {sum(x>0 for x in d)} of {n}")
print(D, P, 'runs base', len(B), 'dist', len(Dd))
print('  base per run', ' '.join(f"{sum(b.values())/len(b):.3f}" for b in B), 'mean', f"{sum(mb.values())/len(mb):.3f}")
print('  dist per run', ' '.join(f"{sum(b.values())/len(b):.3f}" for b in Dd), 'mean', f"{sum(md.values())/len(md):.3f}")
pair(md,mb,'dist','base')
for m,t in T.items(): pair(md,t,'dist',m)
