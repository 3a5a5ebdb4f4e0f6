# stats.py DIR: per case of a BraTS-2018 folder: WT/TC/ET voxels, components, centre, FLAIR WT/brain, T1ce ET/brain
import nibabel as nib, numpy as np, sys, glob, os
from scipy import ndimage
def stats(d):
    n=os.path.basename(d)
    seg=np.asarray(nib.load(glob.glob(d+'/*_seg.nii.gz')[0]).dataobj)
    fl=np.asarray(nib.load(glob.glob(d+'/*_flair.nii.gz')[0]).dataobj).astype(float)
    t1ce=np.asarray(nib.load(glob.glob(d+'/*_t1ce.nii.gz')[0]).dataobj).astype(float)
    brain=fl>0
    wt=seg>0
    lab,nc=ndimage.label(wt)
    sizes=sorted([int((lab==i).sum()) for i in range(1,nc+1)],reverse=True)
    com=ndimage.center_of_mass(wt) if wt.any() else (0,0,0)
    nb=brain&~wt
    c=fl[wt].mean()/fl[nb].mean() if wt.any() else 0
    et=(seg==4).sum(); tc=((seg==1)|(seg==4)).sum()
    ce=t1ce[seg==4].mean()/t1ce[nb].mean() if et else 0
    return f"{n[-4:]} WT {wt.sum():6d} TC {tc:6d} ET {et:6d} comps {sizes[:3]} com {tuple(int(x) for x in com)} flairWT/brain {c:.2f} t1ceET/brain {ce:.2f} flairmax {fl.max():.0f}"
for d in sorted(glob.glob(sys.argv[1]+'/*')):
    if os.path.isdir(d): print(stats(d))
