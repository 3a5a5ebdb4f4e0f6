# table.py RUN: the default of 29c2945 on an earlier demo folder RUN (its teachers, ensemble; students retrained in RUN/v/ by demo_students.sh)
# table.py SEEDDIR : reconstructed new-default table from the old run's teachers + retrained students
import csv,sys,math,os
D=sys.argv[1]
def res(model):
    r=[x for x in csv.DictReader(open(D+'/results.csv')) if x['model']==model]
    return {x['case']:(float(x['dice_wt'])+float(x['dice_tc'])+float(x['dice_et']))/3 for x in r}
def stud(name):
    p=D+'/v/'+name+'.csv'
    if not os.path.exists(p): return None
    r=list(csv.DictReader(open(p)))
    return {x['case']:(float(x['Dice_WT'])+float(x['Dice_TC'])+float(x['Dice_ET']))/3 for x in r}
M={m:res(m) for m in ['unet3d','cascade','resnext-se','ensemble','student-baseline','student-distilled','student-oracle']}
M['baseline (dicebce)']=stud('base-dbce'); M['distilled (dicebce)']=stud('dist-dbce'); M['oracle (dicebce)']=stud('oracle-dbce')
for k,v in M.items(): print(f"{k:24s} {sum(v.values())/len(v):.3f}" if v else f"{k:24s} -")
def pair(a,b):
    a,b=M[a],M[b]
    if not a or not b: return '-'
    d=[a[c]-b[c] for c in a]; n=len(d); m=sum(d)/n; se=math.sqrt(sum((x-m)**2 for x in d)/(n-1)/n)
    v='beats' if m>2*se else 'worse' if m<-2*se else 'tie'
    return f"{m:+.3f} ± {se:.3f} ({v}), better on {sum(x>0 for x in d)} of {n}"
for b in ['baseline (dicebce)','student-baseline','unet3d','cascade','resnext-se','ensemble']:
    print('distilled (dicebce) -', b, pair('distilled (dicebce)', b))
print('oracle (dicebce) - baseline (dicebce)', pair('oracle (dicebce)','baseline (dicebce)'))
