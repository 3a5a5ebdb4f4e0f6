# per case of a truth folder (flat CASE.nii.gz or dataset dirs): WT size; and Dice WT of given pred folders
import nibabel as nib, numpy as np, sys, glob, os
truth=sys.argv[1]; preds=sys.argv[2:]
def load(p): return np.asarray(nib.load(p).dataobj)
files=sorted(glob.glob(truth+'/*.nii.gz')) or sorted(glob.glob(truth+'/*/*_seg.nii.gz'))
for f in files:
    name=os.path.basename(f).replace('_seg','').replace('.nii.gz','')
    t=load(f)>0
    row=f"{name[-4:]} WT {t.sum():5d}"
    for p in preds:
        q=load(glob.glob(p+'/'+name+'*.nii.gz')[0])>0
        d=2*(t&q).sum()/max(1,t.sum()+q.sum())
        row+=f" | {os.path.basename(p.rstrip('/'))[:10]} {d:.2f} n={q.sum()}"
    print(row)
