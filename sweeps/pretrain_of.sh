# The pre-training each backbone starts from in the sweeps and their reports (sourced, not run): MEGNet and M3GNet
# from matgl's formation-energy sets, CHGNet and SevenNet from their MPtrj energy models, ElemNet from the
# formation-energy source model; magpie and quasiharmonic have none.
#   . sweeps/pretrain_of.sh; pretrain_of m3gnet_bte   # → eform
pretrain_of() {
  case $1 in chgnet* | sevennet*) echo mptrj ;; magpie | quasiharmonic) echo scratch ;; *) echo eform ;; esac
}
