# fp.py DATASET PRED...: connected components of each prediction on the small-tumour cases (WT <= 250 voxels)
import nibabel as nib, numpy as np, sys, glob, os
from scipy import ndimage
d, pred = sys.argv[1], sys.argv[2:]
for case in sorted(glob.glob(d+'/*/')):
    name=os.path.basename(case.rstrip('/'))
    seg=np.asarray(nib.load(glob.glob(case+'*_seg.nii.gz')[0]).dataobj)
    if (seg>0).sum()>250: continue
    mods={m:np.asarray(nib.load(glob.glob(case+f'*_{m}.nii.gz')[0]).dataobj).astype(float) for m in ['t1','t1ce','t2','flair']}
    brain=mods['flair']>0
    norm={m:v/v[brain].mean() for m,v in mods.items()}
    t=seg>0
    print(name, 'truth', t.sum(), 'com', [int(x) for x in ndimage.center_of_mass(t)], 'int', ' '.join(f"{norm[m][t].mean():.2f}" for m in norm))
    for p in pred:
        q=np.asarray(nib.load(glob.glob(p+'/'+name+'*.nii.gz')[0]).dataobj)>0
        lab,n=ndimage.label(q)
        for i in range(1,n+1):
            c=lab==i
            print('   ',os.path.basename(p)[:12], 'comp', c.sum(), 'overlap', (c&t).sum(), 'com', [int(x) for x in ndimage.center_of_mass(c)], 'int', ' '.join(f"{norm[m][c].mean():.2f}" for m in norm), 'brainfrac %.2f'%brain[c].mean())
