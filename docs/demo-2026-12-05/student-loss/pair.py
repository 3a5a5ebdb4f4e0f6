# pair.py A.csv B.csv : mean Dice (WT,TC,ET avg) per case, paired A-B mean ± s.e., wins
import csv,sys,math
def load(p):
    r=list(csv.DictReader(open(p)))
    return {x['case']:(float(x['Dice_WT'])+float(x['Dice_TC'])+float(x['Dice_ET']))/3 for x in r}
def loadres(p, model):
    r=[x for x in csv.DictReader(open(p)) if x['model']==model]
    return {x['case']:(float(x['dice_wt'])+float(x['dice_tc'])+float(x['dice_et']))/3 for x in r}
def get(spec):
    if ':' in spec: p,m=spec.split(':'); return loadres(p,m)
    return load(spec)
a=get(sys.argv[1]); b=get(sys.argv[2])
d=[a[c]-b[c] for c in a]
n=len(d); m=sum(d)/n; sd=math.sqrt(sum((x-m)**2 for x in d)/(n-1))
print(f"{sys.argv[1]} {sum(a.values())/n:.3f} - {sys.argv[2]} {sum(b.values())/n:.3f}: {m:+.3f} ± {sd/math.sqrt(n):.3f}, better on {sum(x>0 for x in d)} of {n}")
